"""Job-level faults, driven through the library in-process against the stand-in.

A whole DAG run adds nothing here: the DAG's wait and collect tasks call exactly these functions.
Each case ends with the same two checks as the DAG cases: every source row of the day accounted for
once, and one Bedrock job per planned job.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import time
import uuid
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from bedrock_batch.errors import WindowBusyError
from bedrock_batch.hooks import ACTIVE_STATUSES, BedrockBatchHook
from bedrock_batch.triggers import BedrockBatchJobTrigger
from tests.fixtures.local_aws import LocalAwsServer
from tests.integration.bedrock.support import claude_line
from tests.reliability.support import LibraryRun, assert_conserved, records_submitted_twice

DAY = dt.date(2026, 10, 20)


@pytest.fixture
def library_run(aws_env, local_aws_clean, sqlite_warehouse):
    """A LibraryRun factory; every run gets its own run id (job names are unique per account)."""

    def make(**kwargs: Any) -> LibraryRun:
        kwargs.setdefault("run_id", f"scheduled__{uuid.uuid4().hex[:10]}")
        return LibraryRun(local_aws_clean, sqlite_warehouse, kwargs.pop("day", DAY), **kwargs)

    return make


def _run_one_job(run: LibraryRun) -> tuple[dict, Any]:
    """Prepare, submit, wait and collect the run's only job; returns (job info, outcome)."""
    plan = run.prepare()
    assert len(plan["jobs"]) == 1, plan["counts"]
    job = plan["jobs"][0]
    submitted = run.submit(job)
    info = run.wait(submitted["job_arn"])
    return info, run.collect(job, info)


def _carried_over_with(run: LibraryRun, code: str) -> int:
    return run.account_query(
        "SELECT COUNT(*) FROM call_summary_errors e "
        "JOIN call_summary_pending p ON p.source_key = e.source_key "
        "WHERE e.code = ? AND e.stage = 'batch_job' AND p.reason = 'retry' "
        "AND e.message IS NOT NULL AND e.message <> ''",
        (code,),
    )


# -- jobs that end badly ------------------------------------------------------------------------
def test_a_job_failed_in_validation_queues_every_record_with_the_reason(library_run, local_aws):
    # The pipeline plans one file of ~290 records (documented quotas); this account allows 50.
    local_aws.admin.set_quotas(max_records_per_file=50)
    run = library_run()
    info, outcome = _run_one_job(run)
    assert info["status"] == "Failed"
    assert "50" in info["message"]
    assert outcome.summarized == 0
    assert outcome.not_processed == outcome.records
    assert _carried_over_with(run, "job_failed") == outcome.records
    assert_conserved(run.account(), run.seeded)
    assert len(run.jobs_named(outcome.job_name)) == 1


def test_an_expired_job_queues_every_record(library_run):
    run = library_run(tags={"local-aws:fault": "expire"})
    info, outcome = _run_one_job(run)
    assert info["status"] == "Expired"
    assert outcome.not_processed == outcome.records
    assert _carried_over_with(run, "job_expired") == outcome.records
    assert_conserved(run.account(), run.seeded)
    assert len(run.jobs_named(outcome.job_name)) == 1


def test_a_partially_completed_job_loads_what_ran_and_queues_the_rest(library_run):
    run = library_run(tags={"local-aws:fault": "partial=120"})
    info, outcome = _run_one_job(run)
    assert info["status"] == "PartiallyCompleted"
    assert outcome.summarized == 120
    assert outcome.not_processed == outcome.records - 120
    assert _carried_over_with(run, "job_partiallycompleted") == outcome.records - 120
    counts = run.account()
    assert_conserved(counts, run.seeded)
    assert counts["summarized"] == 120
    assert len(run.jobs_named(outcome.job_name)) == 1


def test_a_job_stopped_mid_run_loads_what_ran_and_queues_the_rest(library_run):
    run = library_run(tags={"local-aws:fault": "hold=120"})  # 120 records processed, then running on
    plan = run.prepare()
    job = plan["jobs"][0]
    submitted = run.submit(job)
    hook = BedrockBatchHook(aws_conn_id="aws_default")
    deadline = time.monotonic() + 60
    while hook.get_job(submitted["job_arn"]).get("processedRecordCount", 0) < 120:
        assert time.monotonic() < deadline, "the job never processed its first 120 records"
        time.sleep(0.05)
    hook.stop_job(submitted["job_arn"])
    info = run.wait(submitted["job_arn"])
    outcome = run.collect(job, info)
    assert info["status"] == "Stopped"
    assert (outcome.summarized, outcome.not_processed) == (120, outcome.records - 120)
    assert _carried_over_with(run, "job_stopped") == outcome.records - 120
    assert run.account_query("SELECT COUNT(*) FROM call_summaries") == 120
    assert_conserved(run.account(), run.seeded)


# -- the submit path ----------------------------------------------------------------------------
def test_a_retry_after_the_worker_died_post_create_adopts_the_job(library_run, local_aws):
    run = library_run()
    plan = run.prepare()
    job = plan["jobs"][0]
    # First try: Bedrock created the job, then the worker died before the ARN reached any store.
    run.submit(job)
    # The retry starts from nothing: a new operator, an empty task state store.
    retried = run.submit(job)
    jobs = run.jobs_named(job["job_name"])
    assert [j["job_arn"] for j in jobs] == [retried["job_arn"]]
    run.collect(job, run.wait(retried["job_arn"]))
    counts = run.account()
    assert_conserved(counts, run.seeded)
    assert counts["summarized"] == job["records"]


def test_an_exception_after_bedrock_accepted_the_job_adopts_the_orphan(library_run, local_aws):
    run = library_run()
    plan = run.prepare()
    job = plan["jobs"][0]
    task = run.submit_operator(job)

    def lose_the_response(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=local_aws.endpoint_url)

    # Every try of the create loses its response; the job exists after the first.
    task.hook.conn.meta.events.register("after-call.bedrock.CreateModelInvocationJob", lose_the_response)
    from tests.reliability.support import DictStateStore, task_context

    result = task.execute(task_context(run.run_id, DictStateStore()))
    jobs = run.jobs_named(job["job_name"])
    assert [j["job_arn"] for j in jobs] == [result["job_arn"]]
    run.collect(job, run.wait(result["job_arn"]))
    assert_conserved(run.account(), run.seeded)


# -- two runs of the same day at once -----------------------------------------------------------
def _run_to_the_end(run: LibraryRun, plan: dict[str, Any], submitted: list[dict[str, Any]]) -> None:
    for job, sub in zip(plan["jobs"], submitted, strict=True):
        run.collect(job, run.wait(sub["job_arn"]))


def test_a_backfill_of_a_day_the_nightly_run_has_in_flight_is_refused_and_bills_nothing(
    library_run, local_aws
):
    jobs_before = len(local_aws.admin.jobs())  # the stand-in serves the whole session
    nightly = library_run(run_id="scheduled__2026-10-20T00:00:00+00:00")
    backfill = library_run(run_id="backfill__2026-10-20T00:00:00+00:00")
    nightly_plan = nightly.prepare()
    nightly_submitted = [nightly.submit(job) for job in nightly_plan["jobs"]]

    with pytest.raises(WindowBusyError, match=r"run 'scheduled__2026-10-20T00:00:00\+00:00' holds the"):
        backfill.prepare(seed_count=0)

    _run_to_the_end(nightly, nightly_plan, nightly_submitted)
    assert nightly.release() == 1
    backfill.seeded = nightly.seeded
    assert backfill.prepare(seed_count=0)["jobs"] == []  # every row of the day is summarized or queued
    assert len(local_aws.admin.jobs()) == jobs_before + len(nightly_plan["jobs"])
    assert_conserved(backfill.account(), nightly.seeded)
    assert records_submitted_twice(local_aws, nightly.submitted_jobs() + backfill.submitted_jobs()) == 0


def test_a_run_takes_over_the_days_of_a_run_airflow_reports_finished(library_run, local_aws):
    died = library_run(run_id="scheduled__2026-10-20T00:00:00+00:00")
    died.prepare()  # staged, then the run failed before submitting anything
    manual = library_run(run_id="manual__2026-10-21T08:00:00+00:00")
    manual.seeded = died.seeded

    plan = manual.prepare(seed_count=0, run_is_live=lambda run_id: False)
    _run_to_the_end(manual, plan, [manual.submit(job) for job in plan["jobs"]])

    assert plan["counts"]["source_rows"] == died.seeded  # the whole day, staged again
    assert_conserved(manual.account(), died.seeded)
    assert records_submitted_twice(local_aws, manual.submitted_jobs()) == 0


# -- the triggerer restarts while the sensor is deferred -----------------------------------------
@pytest.fixture
def slow_stand_in(tmp_path, monkeypatch):
    """A stand-in of its own at speed 0.1 (a 100-record job takes about 13 s, long enough to restart a
    trigger mid-job even on a loaded CI machine), bound to aws_default."""
    import json

    server = LocalAwsServer(tmp_path, speed=0.1)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": server.endpoint_url, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    try:
        yield server
    finally:
        server.stop()


def test_a_trigger_rebuilt_after_a_triggerer_restart_follows_the_same_job(slow_stand_in):
    s3 = slow_stand_in.client("s3")
    s3.create_bucket(Bucket="restart")
    s3.put_object(
        Bucket="restart",
        Key="in/part-00001.jsonl",
        Body=b"\n".join(claude_line(i) for i in range(100)) + b"\n",
    )
    hook = BedrockBatchHook(aws_conn_id="aws_default")
    job_arn = hook.create_job(
        job_name="restart-test",
        role_arn="arn:aws:iam::123456789012:role/BedrockBatch",
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        input_s3_uri="s3://restart/in/",
        output_s3_uri="s3://restart/out/",
        client_request_token="restart-token-1",
        tags={},
    )
    trigger = BedrockBatchJobTrigger(job_arn=job_arn, poll_interval=0.2, max_poll_interval=0.4, jitter=0)

    async def restart_mid_wait() -> tuple[str, list]:
        events_of_first = trigger.run()
        first = asyncio.create_task(anext(events_of_first))
        await asyncio.sleep(0.5)  # at least one poll done; the trigger is sleeping between polls
        assert not first.done()
        first.cancel()  # the triggerer process goes away: its tasks are cancelled, on_kill is not called
        with pytest.raises(asyncio.CancelledError):
            await first
        await events_of_first.aclose()
        status = hook.get_job(job_arn)["status"]
        classpath, kwargs = trigger.serialize()
        module, _, name = classpath.rpartition(".")
        rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
        events = [event async for event in rebuilt.run()]
        return status, events

    status_at_restart, events = asyncio.run(asyncio.wait_for(restart_mid_wait(), timeout=60))
    assert status_at_restart in ACTIVE_STATUSES  # the restart really happened mid-job
    assert len(events) == 1
    assert events[0].payload["status"] == "success"
    assert events[0].payload["job_arn"] == job_arn
    assert [job["job_arn"] for job in slow_stand_in.admin.jobs()] == [job_arn]
