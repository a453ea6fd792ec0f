"""ops.py against the stand-in: listing with filters and pages, stopping, reconciling orphans."""

from __future__ import annotations

import datetime as dt

import pytest

from bedrock_batch import ops
from bedrock_batch.job_tags import run_tags
from tests.integration.bedrock.support import wait_for_status, wait_terminal
from tests.integration.pipeline.support import DAG_ID, PipelineHarness, tiny_quotas

GONE_RUN = "manual__2026-11-10T00:00:00+00:00"
KEPT_RUN = "scheduled__2026-11-09T00:00:00+00:00"
STUCK = "Scheduled"
"""Where the stand-in holds a job tagged ``local-aws:fault=stick``."""


def short_pages(hook, monkeypatch, size: int = 1) -> list[int]:
    """Make ListModelInvocationJobs answer ``size`` jobs a page, as the service may; returns a page log."""
    real_list = hook.conn.list_model_invocation_jobs
    pages: list[int] = []

    def listing(**request):
        response = real_list(**{**request, "maxResults": size})
        pages.append(len(response.get("invocationJobSummaries", [])))
        return response

    monkeypatch.setattr(hook.conn, "list_model_invocation_jobs", listing)
    return pages


def only_kept_run_is_tracked(ref, job_arn) -> bool:
    return ref.run_id == KEPT_RUN


def test_list_jobs_follows_pages_newest_first(hook, make_job, marker, monkeypatch):
    arns = [make_job(f"ls-{marker}-{index}") for index in range(3)]
    pages = short_pages(hook, monkeypatch)
    rows = ops.list_jobs(hook, name_contains=marker)
    assert [row["job_arn"] for row in rows] == arns[::-1]
    assert len(pages) >= 3
    assert {row["job_name"] for row in rows} == {f"ls-{marker}-{index}" for index in range(3)}


def test_list_jobs_stops_at_max_results_across_pages(hook, make_job, marker, monkeypatch):
    arns = [make_job(f"mx-{marker}-{index}") for index in range(3)]
    short_pages(hook, monkeypatch)
    rows = ops.list_jobs(hook, name_contains=marker, sort_order="Ascending", max_results=2)
    assert [row["job_arn"] for row in rows] == arns[:2]


def test_list_jobs_filters_by_status(hook, make_job, marker):
    done = make_job(f"st-{marker}-ok")
    failed = make_job(f"st-{marker}-bad", fault="fail")
    wait_terminal(hook, done)
    wait_terminal(hook, failed)
    rows = ops.list_jobs(hook, status="Failed", name_contains=marker)
    assert [row["job_arn"] for row in rows] == [failed]
    assert rows[0]["status"] == "Failed"
    assert len(ops.list_jobs(hook, status="any", name_contains=marker)) == 2


def test_list_jobs_filters_by_submit_window(hook, make_job, marker):
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    make_job(f"win-{marker}")
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert len(ops.list_jobs(hook, name_contains=marker, submitted_after=before.isoformat())) == 1
    assert ops.list_jobs(hook, name_contains=marker, submitted_after=after.isoformat()) == []
    assert ops.list_jobs(hook, name_contains=marker, submitted_before=before) == []


def test_list_jobs_rows_carry_record_counts(hook, make_job, marker):
    wait_terminal(hook, make_job(f"cnt-{marker}"))
    (row,) = ops.list_jobs(hook, name_contains=marker)
    assert row["status"] == "Completed"
    assert row["total_records"] == row["processed_records"] == 100
    assert row["percent"] == 100


def test_stop_job_stops_a_running_job(hook, make_job, marker):
    job_arn = make_job(f"stop-{marker}", fault="stick")
    wait_for_status(hook, job_arn, {STUCK})
    result = ops.stop_job(hook, job_arn)
    assert result["stopped"] is True
    assert result["status_before"] == STUCK
    assert wait_terminal(hook, job_arn)["status"] == "Stopped"


def test_stop_job_on_a_job_already_stopping_does_not_claim_to_have_stopped_it(hook, make_job, marker):
    job_arn = make_job(f"stopping-{marker}", fault="stick", tags={"local-aws:stopping-seconds": "20"})
    wait_for_status(hook, job_arn, {STUCK})
    hook.stop_job(job_arn)

    result = ops.stop_job(hook, job_arn)

    assert (result["status_before"], result["status"], result["stopped"]) == ("Stopping", "Stopping", False)


def test_stop_job_on_a_job_that_ends_before_the_stop_does_not_claim_to_have_stopped_it(
    hook, make_job, marker, monkeypatch
):
    job_arn = make_job(f"ends-{marker}")
    wait_terminal(hook, job_arn)
    real_get_job = hook.get_job
    reads: list[str] = []

    def read_before_it_ended(arn: str):
        """The status read before the stop saw the job running; it has ended since (on the stand-in
        a job ends in a fraction of a second, so the read is made stale rather than raced)."""
        job = real_get_job(arn)
        reads.append(job["status"])
        return {**job, "status": "InProgress"} if len(reads) == 1 else job

    monkeypatch.setattr(hook, "get_job", read_before_it_ended)

    result = ops.stop_job(hook, job_arn)

    assert reads[0] == "Completed"
    assert (result["status_before"], result["status"], result["stopped"]) == (
        "InProgress",
        "Completed",
        False,
    )


def test_stop_job_on_a_finished_job_reports_its_status(hook, make_job, marker):
    job_arn = make_job(f"done-{marker}")
    wait_terminal(hook, job_arn)
    result = ops.stop_job(hook, job_arn)
    assert result == {
        "job_arn": job_arn,
        "status_before": "Completed",
        "status": "Completed",
        "stopped": False,
    }


def test_reconcile_reports_only_project_jobs_no_run_tracks(hook, make_job, marker):
    orphan = make_job(f"rc-{marker}-orphan", run=(DAG_ID, GONE_RUN))
    make_job(f"rc-{marker}-tracked", run=(DAG_ID, KEPT_RUN))
    make_job(f"rc-{marker}-foreign")
    results = ops.reconcile(hook, is_tracked=only_kept_run_is_tracked, mode="report", name_contains=marker)
    assert [(r["job_arn"], r["dag_id"], r["run_id"], r["action"]) for r in results] == [
        (orphan, DAG_ID, GONE_RUN, "reported")
    ]


def test_reconcile_never_stops_a_job_of_another_deployment_reading_input_elsewhere(hook, make_job, marker):
    """Staging and production in one AWS account: same DAG and run ids, their own input folders."""
    from bedrock_batch.s3paths import job_input_uri

    ours = make_job(f"dp-{marker}-ours", run=(DAG_ID, GONE_RUN), fault="stick")
    theirs = make_job(f"dp-{marker}-theirs", run=(DAG_ID, GONE_RUN), fault="stick")
    wait_for_status(hook, theirs, {STUCK})
    root = job_input_uri(hook.get_job(ours))

    results = ops.reconcile(
        hook, is_tracked=only_kept_run_is_tracked, mode="stop", name_contains=marker, input_roots=[root]
    )

    assert [(r["job_arn"], r["action"]) for r in results] == [(ours, "stopped")]
    assert hook.get_job(theirs)["status"] == STUCK


def test_reconcile_stop_stops_a_running_orphan(hook, make_job, marker):
    orphan = make_job(f"rs-{marker}", run=(DAG_ID, GONE_RUN), fault="stick")
    wait_for_status(hook, orphan, {STUCK})
    (result,) = ops.reconcile(hook, is_tracked=only_kept_run_is_tracked, mode="stop", name_contains=marker)
    assert result["action"] == "stopped"
    assert wait_terminal(hook, orphan)["status"] == "Stopped"


def test_reconcile_stop_does_not_claim_an_orphan_someone_else_is_stopping(hook, make_job, marker):
    orphan = make_job(
        f"rz-{marker}", run=(DAG_ID, GONE_RUN), fault="stick", tags={"local-aws:stopping-seconds": "20"}
    )
    wait_for_status(hook, orphan, {STUCK})
    hook.stop_job(orphan)

    (result,) = ops.reconcile(hook, is_tracked=only_kept_run_is_tracked, mode="stop", name_contains=marker)

    assert (result["status"], result["action"]) == ("Stopping", "none: already Stopping")


def test_reconcile_adopt_leaves_a_running_orphan_alone(hook, make_job, marker):
    orphan = make_job(f"ra-{marker}", run=(DAG_ID, GONE_RUN), fault="stick")
    wait_for_status(hook, orphan, {STUCK})

    def must_not_adopt(found):
        raise AssertionError(f"adopted running job {found.job_arn}")

    (result,) = ops.reconcile(
        hook, is_tracked=only_kept_run_is_tracked, mode="adopt", adopter=must_not_adopt, name_contains=marker
    )
    assert result["action"].startswith(f"none: still {STUCK}")
    assert hook.get_job(orphan)["status"] == STUCK


def test_reconcile_adopt_without_a_pipeline_fails_that_orphan_only(hook, make_job, marker):
    orphan = make_job(f"np-{marker}", run=("no_such_pipeline", GONE_RUN))
    wait_terminal(hook, orphan)
    adopter = ops.JobAdopter(s3_for=lambda of: None, pipeline_for=lambda dag_id: None)
    (result,) = ops.reconcile(
        hook, is_tracked=only_kept_run_is_tracked, mode="adopt", adopter=adopter, name_contains=marker
    )
    assert result["action"] == "failed"
    assert result["retryable"] is False  # the ops DAG then fails without retrying
    assert "no pipeline config named 'no_such_pipeline'" in result["error"]


@pytest.fixture
def pipeline(aws_env, local_aws_clean, sqlite_warehouse) -> PipelineHarness:
    """The shipped pipeline on a fresh SQLite warehouse with the demo source table."""
    local_aws_clean.admin.set_quotas(min_records_per_job=5)  # reset by local_aws_clean
    harness = PipelineHarness(sqlite_warehouse, local_aws_clean).configure()
    harness.create_source()
    return harness


def test_reconcile_adopt_loads_an_orphans_output_into_the_warehouse(hook, pipeline, marker):
    keys = pipeline.add_calls(10)
    run_id = f"manual__ops-adopt-{marker}"
    prepared = pipeline.prepare(tiny_quotas(), run_id=run_id)
    (job,) = prepared.jobs
    job_arn = pipeline.submit(job, run_id=run_id, tags=run_tags(dag_id=DAG_ID, run_id=run_id))
    wait_terminal(hook, job_arn)
    target = ops.AdoptTarget(config=pipeline.config, warehouse=pipeline.warehouse, owner={})
    clients_for: list[str] = []  # the orphan's own pipeline's connection reads its output
    adopter = ops.JobAdopter(
        s3_for=lambda of: clients_for.append(of.config.name) or pipeline.s3,
        pipeline_for=lambda dag_id: target if dag_id == DAG_ID else None,
    )

    (result,) = ops.reconcile(
        hook, is_tracked=lambda ref, arn: False, mode="adopt", adopter=adopter, name_contains=job.job_name
    )

    assert result["action"] == "adopted"
    assert clients_for == [pipeline.config.name]
    assert result["outcome"]["summarized"] == len(keys)
    loaded = pipeline.query("SELECT source_key, job_arn, run_id FROM call_summaries ORDER BY source_key")
    assert loaded == [(key, job_arn, run_id) for key in sorted(keys)]


def test_an_adopted_orphan_is_filed_under_the_prompt_version_it_was_built_with(hook, pipeline, marker):
    from bedrock_batch.job_tags import prompt_version_tags

    pipeline.add_calls(10)
    run_id = f"manual__ops-version-{marker}"
    prepared = pipeline.prepare(tiny_quotas(), run_id=run_id)
    (job,) = prepared.jobs
    tags = {**run_tags(dag_id=DAG_ID, run_id=run_id), **prompt_version_tags("v-before")}
    wait_terminal(hook, pipeline.submit(job, run_id=run_id, tags=tags))
    target = ops.AdoptTarget(config=pipeline.config, warehouse=pipeline.warehouse, owner={})
    adopter = ops.JobAdopter(s3_for=lambda of: pipeline.s3, pipeline_for=lambda dag_id: target)

    ops.reconcile(
        hook, is_tracked=lambda ref, arn: False, mode="adopt", adopter=adopter, name_contains=job.job_name
    )

    assert pipeline.query("SELECT DISTINCT prompt_version FROM call_summaries") == [("v-before",)]


def test_adopting_twice_gives_the_same_rows(hook, pipeline, marker):
    pipeline.add_calls(10)
    run_id = f"manual__ops-twice-{marker}"
    prepared = pipeline.prepare(tiny_quotas(), run_id=run_id)
    (job,) = prepared.jobs
    wait_terminal(hook, pipeline.submit(job, run_id=run_id, tags=run_tags(dag_id=DAG_ID, run_id=run_id)))
    target = ops.AdoptTarget(config=pipeline.config, warehouse=pipeline.warehouse, owner={})
    adopter = ops.JobAdopter(s3_for=lambda of: pipeline.s3, pipeline_for=lambda dag_id: target)

    def adopt() -> list[tuple]:
        ops.reconcile(
            hook, is_tracked=lambda ref, arn: False, mode="adopt", adopter=adopter, name_contains=job.job_name
        )
        return pipeline.query("SELECT source_key, summary, run_id FROM call_summaries ORDER BY source_key")

    first = adopt()
    assert len(first) == 10
    assert adopt() == first
