"""A worker killed right after CreateModelInvocationJob returned, then the whole run rerun, twice.

1. The DAG run is SIGKILLed (its whole process group) as soon as the stand-in holds the new job:
   the submit task never recorded the ARN, nothing was collected.
2. The run is cleared and rerun under the same run id: it must restage the same input, get the same
   job back from Bedrock (same clientRequestToken) instead of a second one, and load its output.
3. The finished run is cleared and rerun again: no new job, the same warehouse rows.

Airflow 3.3's `airflow dags test` names its run after the current time (``manual__<now>``), so two CLI
runs never share a run id. ``DAG.test(run_after=..., logical_date=...)`` with a fixed ``run_after``
does: it deletes the existing run of that logical date and creates it again under the same id, with
every task instance, XCom and task state gone. That is stricter than clearing every task of the run
(clearing keeps the submit task's state store, which would re-attach without asking Bedrock).
"""

from __future__ import annotations

import datetime as dt
import re
import time

import pytest

from tests.reliability.support import assert_conserved, records_submitted_twice, sqlite_warehouse_at

DAY = dt.date(2026, 11, 6)
RUN_AFTER = dt.datetime(2026, 11, 7, 0, 30, tzinfo=dt.UTC)
JOB_WAIT_S = 120.0


def _snapshot(run) -> dict[str, list[tuple]]:
    """The warehouse rows of the day, without the load timestamps."""
    return {
        "summaries": run.query(
            "SELECT source_key, prompt_version, summary, job_arn, run_id FROM call_summaries ORDER BY 1"
        ),
        "errors": run.query(
            "SELECT source_key, stage, code, message, attempt, run_id FROM call_summary_errors ORDER BY 1, 2"
        ),
        "pending": run.query("SELECT source_key, reason, attempts FROM call_summary_pending ORDER BY 1"),
    }


def _run_id(run) -> str:
    found = re.findall(r"DAG_RUN_ID=(\S+)", run.stdout)
    assert found, run.output[-3000:]
    return found[-1]


def _wait_for_new_job(local_aws, known: set[str]) -> dict:
    deadline = time.monotonic() + JOB_WAIT_S
    while time.monotonic() < deadline:
        for job in local_aws.admin.jobs():
            if job["job_id"] not in known:
                return job
        time.sleep(0.05)
    raise AssertionError(f"the run created no job within {JOB_WAIT_S}s")


@pytest.fixture(scope="module")
def killed_then_rerun(dag_runner, local_aws, tmp_path_factory):
    warehouse = sqlite_warehouse_at(tmp_path_factory.mktemp("rerun") / "warehouse.sqlite")
    started = dag_runner.start(warehouse, DAY, run_after=RUN_AFTER)
    try:
        killed_job = _wait_for_new_job(local_aws, started.jobs_before)
    finally:
        started.kill()
    killed = dag_runner.finish(started, timeout=60)
    killed.extra["summaries_after_kill"] = _count_summaries(killed)
    rerun = dag_runner.run(warehouse, DAY, seed_count=0, run_after=RUN_AFTER)
    rerun.seeded = started.seeded
    rerun.extra["snapshot"] = _snapshot(rerun)
    again = dag_runner.run(warehouse, DAY, seed_count=0, run_after=RUN_AFTER)
    again.seeded = started.seeded
    again.extra["snapshot"] = _snapshot(again)
    return killed_job, killed, rerun, again


def _count_summaries(run) -> int:
    import sqlite3

    try:
        return run.query("SELECT COUNT(*) FROM call_summaries")[0][0]
    except sqlite3.OperationalError as error:  # the tables may not exist yet: nothing was loaded
        assert "no such table" in str(error)
        return 0


def test_the_worker_died_before_anything_was_loaded(killed_then_rerun):
    _, killed, _, _ = killed_then_rerun
    assert killed.returncode != 0
    assert killed.extra["summaries_after_kill"] == 0


def test_the_reruns_keep_the_run_id_and_succeed(killed_then_rerun):
    _, _, rerun, again = killed_then_rerun
    assert rerun.returncode == 0, rerun.output[-4000:]
    assert again.returncode == 0, again.output[-4000:]
    assert _run_id(rerun) == _run_id(again) == f"manual__{RUN_AFTER.isoformat()}"


def test_the_rerun_adopts_the_job_the_killed_worker_created(killed_then_rerun):
    killed_job, _, rerun, again = killed_then_rerun
    assert rerun.extra["jobs"] == []
    assert again.extra["jobs"] == []
    loaded_from = {row[3] for row in rerun.extra["snapshot"]["summaries"]}
    assert loaded_from == {killed_job["job_arn"]}


def test_the_rerun_loses_and_doubles_no_row(killed_then_rerun, local_aws):
    killed_job, _, rerun, _ = killed_then_rerun
    counts = rerun.account()
    assert_conserved(counts, rerun.seeded)
    assert counts["summarized"] > 0
    assert records_submitted_twice(local_aws, [killed_job, *rerun.extra["jobs"]]) == 0


def test_rerunning_a_finished_run_leaves_the_same_rows(killed_then_rerun):
    _, _, rerun, again = killed_then_rerun
    assert again.extra["snapshot"] == rerun.extra["snapshot"]
    assert_conserved(again.account(), again.seeded)
