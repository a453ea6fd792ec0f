"""Window claims met by the real DAG: the prepare task asks Airflow about the run holding its days.

A claim row is planted in the warehouse for a run id, then a DAG run (``DAG.test`` with a fixed
``run_after``, so its run id is known) prepares the same day: a run Airflow does not know may still
be in flight, so its claim holds and the run stops before staging anything; a run Airflow reports
finished does not hold its days, and the new run takes them over.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.reliability.support import assert_conserved, duplicate_rows, sqlite_warehouse_at

FIRST_DAY = dt.date(2026, 11, 14)
HELD_DAY = dt.date(2026, 11, 15)
FIRST_RUN_AFTER = dt.datetime(2026, 11, 15, 0, 30, tzinfo=dt.UTC)
FIRST_RUN_ID = f"manual__{FIRST_RUN_AFTER.isoformat()}"


def _prompt_version() -> str:
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline
    from bedrock_batch.prompts import load_prompt

    return load_prompt(load_pipeline(PIPELINES_DIR / "summarize_calls.yaml").prompt_path).version


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


@pytest.fixture(scope="module")
def claimed_runs(dag_runner, tmp_path_factory):
    """A finished first run, then two runs of a held day: held by an unknown run, then by the first."""
    warehouse = sqlite_warehouse_at(tmp_path_factory.mktemp("window-claims") / "warehouse.sqlite")
    first = dag_runner.run(warehouse, FIRST_DAY, run_after=FIRST_RUN_AFTER)
    _hold(warehouse, "scheduled__gone", HELD_DAY)
    refused = dag_runner.run(warehouse, HELD_DAY)
    by_run = "SELECT run_id, COUNT(*) FROM call_summaries GROUP BY run_id"
    refused.extra["summaries_by_run"] = refused.query(by_run)
    conn = warehouse.connect()
    try:
        conn.execute("DELETE FROM call_summary_pending_windows WHERE run_id = 'scheduled__gone'")
        conn.commit()
    finally:
        conn.close()
    _hold(warehouse, FIRST_RUN_ID, HELD_DAY)
    taken_over = dag_runner.run(warehouse, HELD_DAY, seed_count=0)
    taken_over.seeded = refused.seeded
    return first, refused, taken_over


def test_a_day_held_by_a_run_airflow_cannot_vouch_for_stops_the_run_before_staging(claimed_runs):
    first, refused, _ = claimed_runs
    assert first.returncode == 0, first.output[-3000:]
    assert refused.returncode != 0
    assert "WindowBusyError: run 'scheduled__gone' holds the window 2026-11-15 00:00:00" in refused.output
    assert refused.extra["jobs"] == []
    assert [run_id for run_id, _ in refused.extra["summaries_by_run"]] == [FIRST_RUN_ID]


def test_a_day_held_by_a_run_airflow_reports_finished_is_taken_over(claimed_runs):
    _, _, taken_over = claimed_runs
    assert taken_over.returncode == 0, taken_over.output[-3000:]
    assert f"Took over the window claim of run {FIRST_RUN_ID}" in taken_over.output
    assert len(taken_over.extra["jobs"]) >= 1
    assert_conserved(taken_over.account(), taken_over.seeded)
    assert duplicate_rows(taken_over) == 0
    assert taken_over.query("SELECT COUNT(*) FROM call_summary_pending_windows") == [(0,)]
