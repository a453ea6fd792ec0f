"""Backfills of the nightly DAG on the full stack: one run per day, each its own day, deferred waits."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest

from tests.e2e.conftest import DAG_ID

# The first test also waits for the stack to start and the backfill to finish (bounded by the fixtures).
pytestmark = [pytest.mark.airflow_stack, pytest.mark.timeout(600)]

TRIGGER_LOG = re.compile(r"\.log\.trigger\.(\d+)\.log$")


def _day_bounds(day: dt.date) -> tuple[str, str]:
    start = dt.datetime.combine(day, dt.time())
    return start.strftime("%Y-%m-%d %H:%M:%S"), (start + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")


def _run_day(run: dict[str, Any]) -> dt.date:
    return dt.date.fromisoformat(run["data_interval_start"][:10])


def test_backfill_creates_one_successful_run_per_day(backfill):
    assert sorted(_run_day(run) for run in backfill.runs) == list(backfill.days)
    assert {run["state"] for run in backfill.runs} == {"success"}


def test_each_backfill_run_summarizes_exactly_its_own_day(airflow_stack, backfill):
    with airflow_stack.warehouse() as db:
        for run in backfill.runs:
            start, end = _day_bounds(_run_day(run))
            outside = db.execute(
                "SELECT COUNT(*) FROM call_summaries s JOIN call_transcripts t ON t.call_id = s.source_key "
                "WHERE s.run_id = ? AND NOT (t.started_at >= ? AND t.started_at < ?)",
                (run["dag_run_id"], start, end),
            ).fetchone()[0]
            missed = db.execute(
                "SELECT COUNT(*) FROM call_transcripts t WHERE t.started_at >= ? AND t.started_at < ? "
                "AND NOT EXISTS (SELECT 1 FROM call_summaries s WHERE s.source_key = t.call_id "
                "  AND s.run_id = ?) "
                "AND NOT EXISTS (SELECT 1 FROM call_summary_errors e WHERE e.source_key = t.call_id "
                "  AND e.run_id = ?)",
                (start, end, run["dag_run_id"], run["dag_run_id"]),
            ).fetchone()[0]
            summarized = db.execute(
                "SELECT COUNT(*) FROM call_summaries WHERE run_id = ?", (run["dag_run_id"],)
            ).fetchone()[0]
            assert (outside, missed) == (0, 0), run["dag_run_id"]
            assert summarized > 0, run["dag_run_id"]


def test_backfill_leaves_days_outside_its_range_alone(airflow_stack, backfill):
    start, end = _day_bounds(airflow_stack.seeded_days[0])
    with airflow_stack.warehouse() as db:
        touched = db.execute(
            "SELECT COUNT(*) FROM call_summaries s JOIN call_transcripts t ON t.call_id = s.source_key "
            "WHERE t.started_at >= ? AND t.started_at < ?",
            (start, end),
        ).fetchone()[0]
    assert touched == 0


def test_no_source_row_is_summarized_twice_or_left_pending(airflow_stack, backfill):
    with airflow_stack.warehouse() as db:
        total, distinct = db.execute(
            "SELECT COUNT(*), COUNT(DISTINCT source_key) FROM call_summaries"
        ).fetchone()
        pending = db.execute("SELECT COUNT(*) FROM call_summary_pending").fetchone()[0]
    assert total == distinct
    assert pending == 0


def test_backfill_submits_one_batch_job_per_day(airflow_stack, backfill):
    assert len(airflow_stack.aws_admin.jobs()) - backfill.jobs_before == len(backfill.days)


def _wait_log(api: Any, run: dict[str, Any]) -> list[dict[str, Any]]:
    """The sensor's log as the UI shows it: the worker's part and the triggerer's part, merged."""
    path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/batch_job.wait"
    task = api.get(f"{path}/0")
    return api.get(f"{path}/logs/{task['try_number']}", map_index=0, full_content=True)["content"]


def test_sensor_waits_deferred_on_the_triggerer(airflow_stack, backfill):
    triggerers = {job["id"] for job in airflow_stack.api.get("/jobs", job_type="TriggererJob")["jobs"]}
    for run in backfill.runs:
        events = [str(line.get("event", "")) for line in _wait_log(airflow_stack.api, run)]
        # The triggerer writes its part of a task's log to "<try log>.trigger.<triggerer job id>.log".
        trigger_logs = {int(m[1]) for event in events if (m := TRIGGER_LOG.search(event))}
        assert any(event.startswith("Pausing task as DEFERRED") for event in events), run["dag_run_id"]
        assert trigger_logs and trigger_logs <= triggerers, (run["dag_run_id"], trigger_logs, triggerers)
        assert "Trigger fired event" in events, run["dag_run_id"]
