"""Window claims met by the real DAG: Airflow and Bedrock are asked whether the holding run is over.

A claim row is planted in the warehouse for a run id, then a DAG run prepares the same day. A run
whose Bedrock job still runs holds its days: the run stops before staging anything. The claim of a
run Airflow has as finished (``DAG.test`` with a fixed ``run_after``, so its run id is known) and
whose jobs have ended is taken over, and the day runs.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

import pytest

from bedrock_batch.hooks import ACTIVE_STATUSES, TERMINAL_STATUSES
from bedrock_batch.operators import bedrock_job_name
from bedrock_batch.prepare import RunContext, job_name_prefix
from bedrock_batch.windows import local_day
from tests.integration.bedrock.support import MODEL_ID, RECORDS, claude_line
from tests.reliability.support import (
    BUCKET,
    ROLE_ARN,
    assert_conserved,
    records_submitted_twice,
    sqlite_warehouse_at,
)

FIRST_DAY = dt.date(2026, 11, 14)
HELD_DAY = dt.date(2026, 11, 15)
FIRST_RUN_AFTER = dt.datetime(2026, 11, 15, 0, 30, tzinfo=dt.UTC)
FIRST_RUN_ID = f"manual__{FIRST_RUN_AFTER.isoformat()}"
GONE_RUN_ID = "scheduled__2026-11-15T00:00:00+00:00-gone"
DAG_ID = "summarize_calls"
JOB_WAIT_S = 60.0


def _prompt_version() -> str:
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline
    from bedrock_batch.prompts import load_prompt

    return load_prompt(load_pipeline(PIPELINES_DIR / f"{DAG_ID}.yaml").prompt_path).version


def _hold(warehouse, run_id: str, day: dt.date) -> None:
    """Plant ``run_id``'s claim on ``day`` as the prepare task writes it (SQLite timestamps are text)."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    conn = warehouse.connect()
    try:
        conn.execute(
            "INSERT INTO call_summary_pending_windows"
            " (run_id, prompt_version, window_start, window_end, claimed_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, _prompt_version(), f"{day} 00:00:00", f"{day + dt.timedelta(days=1)} 00:00:00", now),
        )
        conn.commit()
    finally:
        conn.close()


def _release(warehouse, run_id: str) -> None:
    conn = warehouse.connect()
    try:
        conn.execute("DELETE FROM call_summary_pending_windows WHERE run_id = ?", (run_id,))
        conn.commit()
    finally:
        conn.close()


def _stuck_job_of(local_aws, run_id: str) -> str:
    """A job named as ``run_id``'s first job of HELD_DAY and reading input where that run stages it
    (this deployment's), held in Scheduled until it is stopped."""
    run_key = RunContext(DAG_ID, run_id).key
    planned = job_name_prefix(DAG_ID, local_day(HELD_DAY, "UTC"), run_key) + "-j001"
    prefix = f"bedrock-batch/input/{DAG_ID}/{run_key}/jobs/{planned}"
    body = b"\n".join(claude_line(index) for index in range(RECORDS)) + b"\n"
    local_aws.client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}/part-00001.jsonl", Body=body)
    bedrock = local_aws.client("bedrock")
    job_arn = bedrock.create_model_invocation_job(
        jobName=bedrock_job_name(planned, uuid.uuid4().hex),
        roleArn=ROLE_ARN,
        modelId=MODEL_ID,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/{prefix}/"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/{prefix}-out/"}},
        tags=[{"key": "local-aws:fault", "value": "stick"}],
    )["jobArn"]
    assert bedrock.get_model_invocation_job(jobIdentifier=job_arn)["status"] in ACTIVE_STATUSES
    return job_arn


def _stop(local_aws, job_arn: str) -> None:
    bedrock = local_aws.client("bedrock")
    bedrock.stop_model_invocation_job(jobIdentifier=job_arn)
    deadline = time.monotonic() + JOB_WAIT_S
    while bedrock.get_model_invocation_job(jobIdentifier=job_arn)["status"] not in TERMINAL_STATUSES:
        assert time.monotonic() < deadline, f"{job_arn} did not stop within {JOB_WAIT_S}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def claimed_runs(dag_runner, local_aws, tmp_path_factory):
    """A finished first run; a run of a day a gone run holds while its job runs; then of the same day
    once that claim is released and the first run's planted instead."""
    warehouse = sqlite_warehouse_at(tmp_path_factory.mktemp("window-claims") / "warehouse.sqlite")
    first = dag_runner.run(warehouse, FIRST_DAY, run_after=FIRST_RUN_AFTER)
    _hold(warehouse, GONE_RUN_ID, HELD_DAY)
    stuck = _stuck_job_of(local_aws, GONE_RUN_ID)
    try:
        refused = dag_runner.run(warehouse, HELD_DAY)
        refused.extra["summaries_by_run"] = refused.query(
            "SELECT run_id, COUNT(*) FROM call_summaries GROUP BY run_id"
        )
    finally:
        _stop(local_aws, stuck)
    _release(warehouse, GONE_RUN_ID)  # Airflow does not have it: only its TTL or an operator ends it
    _hold(warehouse, FIRST_RUN_ID, HELD_DAY)
    taken_over = dag_runner.run(warehouse, HELD_DAY, seed_count=0)
    taken_over.seeded = refused.seeded
    return first, refused, taken_over


def test_a_day_held_by_a_run_whose_bedrock_job_still_runs_stops_the_run_before_staging(claimed_runs):
    first, refused, _ = claimed_runs
    assert first.returncode == 0, first.output[-3000:]
    assert refused.returncode != 0
    assert f"WindowBusyError: run '{GONE_RUN_ID}' holds the window 2026-11-15 00:00:00" in refused.output
    assert "Bedrock still runs its jobs" in refused.output
    assert f"Run {GONE_RUN_ID} of {DAG_ID} is not running in Airflow, but its jobs" in refused.output
    assert refused.extra["jobs"] == []
    assert [run_id for run_id, _ in refused.extra["summaries_by_run"]] == [FIRST_RUN_ID]


def test_the_days_of_a_run_airflow_has_as_finished_are_taken_over(claimed_runs, local_aws):
    first, _, taken_over = claimed_runs
    assert taken_over.returncode == 0, taken_over.output[-3000:]
    assert f"Took over the window claim of run {FIRST_RUN_ID}, which is over" in taken_over.output
    assert len(taken_over.extra["jobs"]) >= 1
    assert_conserved(taken_over.account(), taken_over.seeded)
    assert records_submitted_twice(local_aws, [*first.extra["jobs"], *taken_over.extra["jobs"]]) == 0
    assert taken_over.query("SELECT COUNT(*) FROM call_summary_pending_windows") == [(0,)]
