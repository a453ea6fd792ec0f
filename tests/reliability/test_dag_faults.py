"""Faults met by the real nightly DAG (`airflow dags test`) on the stand-in.

Each case proves conservation (every source row of the day ends summarized, errored with a reason,
or pending, and none twice) and idempotency (one Bedrock job per planned job, no duplicate rows).
"""

from __future__ import annotations

import datetime as dt
import threading
import time

from bedrock_batch.hooks import BedrockBatchHook
from tests.reliability.support import (
    assert_conserved,
    errors_without_reason,
    planned_jobs,
    records_submitted_twice,
)

JOB_WAIT_S = 120.0


def _failed_calls(run, action: str, status: int) -> int:
    return sum(1 for call in run.extra["calls"] if call["action"] == action and call["status"] == status)


# -- a throttling, erroring service, 5% of records failing ----------------------------------------
def test_throttling_500s_and_record_errors_were_all_met(noisy_hardened_run):
    run = noisy_hardened_run
    for action in ("bedrock:CreateModelInvocationJob", "bedrock:GetModelInvocationJob"):
        assert _failed_calls(run, action, 429) >= 1, action
        assert _failed_calls(run, action, 500) >= 1, action
    assert sum(job["errored"] for job in run.extra["jobs"]) > 0


def test_a_throttling_erroring_service_still_ends_the_run_green(noisy_hardened_run):
    assert noisy_hardened_run.returncode == 0, noisy_hardened_run.output[-4000:]


def test_a_throttling_erroring_service_loses_no_row(noisy_hardened_run):
    counts = noisy_hardened_run.account()
    assert_conserved(counts, noisy_hardened_run.seeded)
    assert counts["pending"] + counts["errored"] > 0  # the 5% record errors and the rejected rows


def test_retried_creates_make_one_job_per_planned_job(noisy_hardened_run, local_aws):
    jobs = noisy_hardened_run.extra["jobs"]
    assert len(jobs) == planned_jobs(noisy_hardened_run) >= 1
    assert len({job["job_name"] for job in jobs}) == len(jobs)
    assert records_submitted_twice(local_aws, jobs) == 0


def test_the_report_task_frees_the_runs_days_once_every_job_is_loaded(noisy_hardened_run):
    assert "holds the window" in noisy_hardened_run.output  # prepare claimed the day
    assert "released its window" in noisy_hardened_run.output
    assert noisy_hardened_run.query("SELECT COUNT(*) FROM call_summary_pending_windows")[0][0] == 0


def test_every_error_row_carries_a_reason(noisy_hardened_run):
    assert noisy_hardened_run.query("SELECT COUNT(*) FROM call_summary_errors")[0][0] > 0
    assert errors_without_reason(noisy_hardened_run) == 0


def test_failed_records_are_queued_for_retry(noisy_hardened_run):
    retry = noisy_hardened_run.query(
        "SELECT COUNT(*) FROM call_summary_pending p JOIN call_summary_errors e "
        "ON e.source_key = p.source_key AND e.stage = 'model' WHERE p.reason = 'retry'"
    )[0][0]
    assert retry > 0


# -- an operator stops the job while the sensor waits ---------------------------------------------
def test_a_job_stopped_by_an_operator_mid_run_leaves_every_row_accounted_for(
    dag_runner, local_aws, fresh_warehouse, aws_env
):
    # The job processes 100 records, then runs on until it is stopped.
    local_aws.admin.set_faults(job_outcome="hold", partial_after=100)
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(run=dag_runner.run(fresh_warehouse, dt.date(2026, 11, 5))), daemon=True
    )
    known = {job["job_id"] for job in local_aws.admin.jobs()}
    runner.start()
    try:
        running = _wait_for_new_job(local_aws, known, "InProgress")
        local_aws.admin.reset_faults()
        hook = BedrockBatchHook(aws_conn_id="aws_default")
        deadline = time.monotonic() + JOB_WAIT_S
        while hook.get_job(running["job_arn"]).get("processedRecordCount", 0) < 100:
            assert time.monotonic() < deadline, "the job never processed its first 100 records"
            time.sleep(0.1)
        hook.stop_job(running["job_arn"])
    finally:
        local_aws.admin.reset_faults()
        runner.join(timeout=300)
    assert not runner.is_alive(), "the DAG run did not end after the stop"
    run = result["run"]
    assert [job["status"] for job in run.extra["jobs"]] == ["Stopped"]
    assert planned_jobs(run) == 1
    counts = run.account()
    assert_conserved(counts, run.seeded)
    assert counts["summarized"] == 100
    stopped = run.query(
        "SELECT COUNT(*) FROM call_summary_errors e JOIN call_summary_pending p "
        "ON p.source_key = e.source_key WHERE e.code = 'job_stopped' AND p.reason = 'retry'"
    )[0][0]
    assert stopped == run.extra["jobs"][0]["total_records"] - 100 > 0
    assert records_submitted_twice(local_aws, run.extra["jobs"]) == 0


def _wait_for_new_job(local_aws, known: set[str], status: str) -> dict:
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        for job in local_aws.admin.jobs():
            if job["job_id"] not in known and job["status"] == status:
                return job
        time.sleep(0.2)
    raise AssertionError(f"no new job reached {status} within {JOB_WAIT_S}s")
