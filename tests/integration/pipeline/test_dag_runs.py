"""The whole nightly DAG (`airflow dags test`) when a job fails, on a rerun, on a small-batch day, and
when an operator asks for a day's summaries again (``re_summarize``).

Each run costs ~20 s, so these few cover what only the DAG can show: the run's state, the task
wiring (collect and report after a failure, on demand instead of a job) and reruns of the same run.
Days differ from the other DAG tests': the stand-in remembers job names for the whole session.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from types import SimpleNamespace

from tests.fixtures.airflow_env import airflow_metadata

FAILED_DAY = dt.date(2026, 12, 1)
SMALL_DAY = dt.date(2026, 12, 5)
RESUMMARIZED_DAY = dt.date(2026, 12, 9)
DRY_DAY = dt.date(2026, 12, 13)
BAD_FORM_DAY = dt.date(2026, 12, 17)
CUSTOM_MODEL_DAY = dt.date(2026, 12, 21)
CUSTOM_SMALL_DAY = dt.date(2026, 12, 25)
ALERT_DAY = dt.date(2026, 12, 29)
TEMPLATED_REGION_DAY = dt.date(2027, 1, 2)
DAG_ID = "summarize_calls"


def jobs_of(local_aws, day: dt.date) -> list[dict]:
    stem = f"summarize-calls-{day:%Y%m%d}-"
    return [job for job in local_aws.admin.jobs() if job["job_name"].startswith(stem)]


def submit_again(local_aws, job: dict, run_id: str) -> dict:
    """The submit task of ``run_id`` retried on a worker that lost its state: same plan job, same run."""
    from bedrock_batch.operators import BedrockBatchSubmitOperator
    from bedrock_batch.s3paths import list_keys, split_s3_uri
    from bedrock_batch.staging import iter_record_map

    s3 = local_aws.client("s3")
    input_uri = job["input_data_config"]["s3InputDataConfig"]["s3Uri"]
    bucket, prefix = split_s3_uri(input_uri)
    sizes = [s3.head_object(Bucket=bucket, Key=key)["ContentLength"] for key in list_keys(s3, bucket, prefix)]
    map_key = prefix.replace("/jobs/", "/maps/").rstrip("/") + ".jsonl"
    plan_job = {
        # The Bedrock job name is the planned name plus 8 characters of the input's token.
        "job_name": job["job_name"].rsplit("-", 1)[0],
        "input_s3_uri": input_uri,
        "output_s3_uri": job["output_data_config"]["s3OutputDataConfig"]["s3Uri"],
        "records": sum(1 for _ in iter_record_map(s3, f"s3://{bucket}/{map_key}")),
        "bytes": sum(sizes),
    }
    task = BedrockBatchSubmitOperator(
        task_id="submit", job=plan_job, role_arn=job["role_arn"], model_id=job["model_id"]
    )
    return task.execute({"ti": SimpleNamespace(dag_id=DAG_ID, stats_tags={}), "run_id": run_id})


def test_a_failed_job_fails_the_run_but_queues_every_row_and_a_rerun_picks_them_up(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    failed = run_pipeline(
        sqlite_warehouse, FAILED_DAY, seed_count=150, config_changes={"jobs.tags.local-aws:fault": "fail"}
    )
    assert failed.returncode != 0, failed.output[-4000:]
    counts = failed.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["duplicated"]) == (150, 0, 0)
    assert counts["summarized"] == 0 and counts["pending"] > 100
    (job,) = jobs_of(local_aws_clean, FAILED_DAY)
    assert job["status"] == "Failed"

    # The submit task retried for the same run (it died after CreateModelInvocationJob): no second job.
    ((run_id,),) = failed.query("SELECT DISTINCT run_id FROM call_summary_errors WHERE stage = 'batch_job'")
    local_aws_clean.admin.clear_calls()
    assert submit_again(local_aws_clean, job, run_id)["job_arn"] == job["job_arn"]
    assert [j["job_arn"] for j in jobs_of(local_aws_clean, FAILED_DAY)] == [job["job_arn"]]
    assert "bedrock:CreateModelInvocationJob" not in local_aws_clean.calls()

    # A new run of the same day (no fault now) takes every queued row.
    rerun = run_pipeline(sqlite_warehouse, FAILED_DAY, seed_count=0)
    assert rerun.returncode == 0, rerun.output[-4000:]
    after = rerun.account()
    assert (after["unaccounted"], after["duplicated"], after["pending"]) == (0, 0, 0)
    assert after["summarized"] == counts["pending"]
    assert after["errored"] == counts["errored"]
    assert len(jobs_of(local_aws_clean, FAILED_DAY)) == 2


def test_a_small_batch_day_with_policy_on_demand_is_summarized_without_a_batch_job(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    run = run_pipeline(
        sqlite_warehouse, SMALL_DAY, seed_count=30, config_changes={"small_batch.policy": "on_demand"}
    )
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["pending"]) == (30, 0, 0)
    assert counts["summarized"] + counts["errored"] == 30 and counts["summarized"] > 20
    calls = Counter(local_aws_clean.calls())
    assert calls["bedrock:CreateModelInvocationJob"] == 0
    assert calls["bedrock:InvokeModel"] == counts["summarized"]
    assert jobs_of(local_aws_clean, SMALL_DAY) == []


def test_re_summarize_runs_a_summarized_day_again_and_replaces_its_summaries(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    first = run_pipeline(sqlite_warehouse, RESUMMARIZED_DAY, seed_count=120)
    assert first.returncode == 0, first.output[-4000:]
    summarized = first.account()["summarized"]
    (first_run,) = {row[0] for row in first.query("SELECT run_id FROM call_summaries")}

    plain = run_pipeline(sqlite_warehouse, RESUMMARIZED_DAY, seed_count=0)
    assert plain.returncode == 0, plain.output[-4000:]
    assert len(jobs_of(local_aws_clean, RESUMMARIZED_DAY)) == 1  # nothing left to do: no new job

    again = run_pipeline(sqlite_warehouse, RESUMMARIZED_DAY, seed_count=0, conf={"re_summarize": True})
    assert again.returncode == 0, again.output[-4000:]
    counts = again.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["duplicated"]) == (120, 0, 0)
    assert counts["summarized"] == summarized
    assert len(jobs_of(local_aws_clean, RESUMMARIZED_DAY)) == 2
    run_ids = {row[0] for row in again.query("SELECT run_id FROM call_summaries")}
    assert len(run_ids) == 1 and run_ids != {first_run}


def asset_events_of(dag_id: str) -> int:
    """Asset events the session's Airflow metadata DB holds from ``dag_id``'s runs."""
    return airflow_metadata("SELECT COUNT(*) FROM asset_event WHERE source_dag_id = ?", (dag_id,))[0][0]


def test_a_dry_run_succeeds_without_updating_the_output_asset(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    before = asset_events_of(DAG_ID)

    dry = run_pipeline(sqlite_warehouse, DRY_DAY, seed_count=120, conf={"dry_run": True})

    assert dry.returncode == 0, dry.output[-4000:]
    assert jobs_of(local_aws_clean, DRY_DAY) == []
    assert asset_events_of(DAG_ID) == before
    wet = run_pipeline(sqlite_warehouse, DRY_DAY, seed_count=0)
    assert wet.returncode == 0, wet.output[-4000:]
    assert asset_events_of(DAG_ID) == before + 1


def test_a_mistake_in_the_trigger_form_fails_prepare_at_once_naming_the_params(
    run_pipeline, sqlite_warehouse
):
    run = run_pipeline(sqlite_warehouse, BAD_FORM_DAY, seed_count=0, conf={"window_start": "2026-12-17"})

    assert run.returncode != 0
    assert "params window_start and window_end must be given together" in run.output
    (run_id,) = set(re.findall(r"summarize_calls\.prepare (manual__\S+)", run.output))
    assert airflow_metadata(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'prepare'",
        (DAG_ID, run_id),
    ) == [("failed", 1)]  # no retry of what a retry cannot mend


def test_a_failed_run_sends_one_alert_through_the_configured_notifiers(
    run_pipeline, sqlite_warehouse, tmp_path
):
    import json

    sent = tmp_path / "alerts.jsonl"
    notifier = {"notifier": "tests.fixtures.notifiers.FileNotifier", "kwargs": {"path": str(sent)}}
    run = run_pipeline(
        sqlite_warehouse,
        ALERT_DAY,
        seed_count=0,
        conf={"window_start": "2026-12-29"},  # prepare fails at once, and for good: a form mistake
        config_changes={"alerts.on_failure": [notifier]},
    )
    assert run.returncode != 0
    (alert,) = [json.loads(line) for line in sent.read_text().splitlines()]
    assert (alert["dag_id"], alert["task_id"]) == (DAG_ID, "report")  # one, though prepare failed too
    assert alert["run_id"].startswith("manual__")


CUSTOM_HAIKU = (
    "arn:aws:bedrock:us-east-1:123456789012:custom-model/"
    "anthropic.claude-3-5-haiku-20241022-v1:0:200k/a1b2c3d4e5f6"
)


def test_a_custom_model_arn_runs_in_batch_as_its_base_models_family(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    run = run_pipeline(
        sqlite_warehouse,
        CUSTOM_MODEL_DAY,
        seed_count=120,
        config_changes={"model.id": CUSTOM_HAIKU, "small_batch.policy": "fail"},
    )
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["pending"]) == (120, 0, 0)
    assert counts["summarized"] > 100
    (job,) = jobs_of(local_aws_clean, CUSTOM_MODEL_DAY)
    assert job["model_id"] == CUSTOM_HAIKU


def test_a_custom_models_small_batch_goes_on_demand_to_its_deployment(
    run_pipeline, sqlite_warehouse, local_aws_clean
):
    # The stand-in refuses the custom model's ARN on demand, as the service does: every summary
    # comes from the deployment.
    run = run_pipeline(
        sqlite_warehouse,
        CUSTOM_SMALL_DAY,
        seed_count=30,
        config_changes={
            "model.id": CUSTOM_HAIKU,
            "small_batch.policy": "on_demand",
            "small_batch.on_demand_model_id": (
                "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3d4e5f6"
            ),
        },
    )
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["pending"]) == (30, 0, 0)
    assert counts["summarized"] > 20
    assert Counter(local_aws_clean.calls())["bedrock:InvokeModel"] == counts["summarized"]


def test_a_templated_aws_region_is_rendered_by_every_task(run_pipeline, sqlite_warehouse, local_aws_clean):
    # botocore refuses a region name with braces in it: a task that does not render the setting fails.
    run = run_pipeline(
        sqlite_warehouse,
        TEMPLATED_REGION_DAY,
        seed_count=120,
        config_changes={"aws.region": "{{ var.value.get('calls_region', 'us-east-1') }}"},
    )
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert (counts["source_rows"], counts["unaccounted"], counts["pending"]) == (120, 0, 0)
    (job,) = jobs_of(local_aws_clean, TEMPLATED_REGION_DAY)
    assert job["job_arn"].startswith("arn:aws:bedrock:us-east-1:")
