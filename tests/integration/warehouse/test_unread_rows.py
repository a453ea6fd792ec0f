"""Specification of the unread-rows count: rows of earlier days that no run has read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bedrock_batch.warehouse import ErrorRow, SummaryRow, Warehouse

from .conftest import MODEL, PROMPT, SOURCE, TABLES, execute, insert_calls

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def unread(wh: Warehouse) -> tuple[int, str | None, str | None]:
    found = wh.unread_rows(SOURCE, start=DAY, end=NEXT_DAY)
    as_text = [
        None if value is None else str(value)[:19].replace("T", " ") for value in (found.first, found.last)
    ]
    return found.rows, *as_text


def load(wh: Warehouse, results=(), errors=(), *, prompt_version: str = PROMPT) -> None:
    wh.load_job(
        results,
        errors,
        run_id="run-1",
        job_arn="arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/run1",
        prompt_version=prompt_version,
        model_id=MODEL,
        max_attempts=3,
    )


def test_rows_no_run_has_read_are_counted_with_their_first_and_last_time(warehouse, warehouse_db):
    insert_calls(
        warehouse_db,
        [("a", DAY + timedelta(hours=23, minutes=55), "t"), ("b", DAY + timedelta(hours=3), "t")],
    )
    assert unread(warehouse) == (2, "2026-11-20 03:00:00", "2026-11-20 23:55:00")


def test_rows_summarized_errored_or_queued_under_any_prompt_version_are_read(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(key, DAY + timedelta(hours=1), "t") for key in "abcd"])
    load(warehouse, [SummaryRow("a", "ok", 10, 2, "end_turn")], prompt_version="an-older-prompt")
    load(warehouse, errors=[ErrorRow("b", "prepare", "too_long", "long", retryable=False, attempt=1)])
    warehouse.carry_over(["c"], run_id="run-1", prompt_version=PROMPT)
    assert unread(warehouse)[0] == 1


def test_rows_of_a_window_a_run_in_flight_holds_are_not_counted(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY + timedelta(hours=1), "t"), ("b", DAY + timedelta(hours=13), "t")])
    warehouse.claim_window(
        run_id="manual__1", prompt_version=PROMPT, start=DAY, end=DAY + timedelta(hours=12)
    )
    assert unread(warehouse)[0] == 1


def test_rows_under_a_claim_older_than_the_claim_ttl_are_counted(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY + timedelta(hours=1), "t")])
    warehouse.claim_window(run_id="gave-up", prompt_version=PROMPT, start=DAY, end=NEXT_DAY)
    assert unread(warehouse)[0] == 0
    stale = datetime.now(UTC) - warehouse.claim_ttl - timedelta(hours=1)
    execute(
        warehouse_db, [f"UPDATE {TABLES.window_claims_table} SET claimed_at = '{stale:%Y-%m-%d %H:%M:%S}'"]
    )
    assert unread(warehouse)[0] == 1


def test_rows_outside_the_span_are_not_counted(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY - timedelta(seconds=1), "t"), ("b", NEXT_DAY, "t")])
    assert unread(warehouse) == (0, None, None)


@pytest.mark.parametrize("warehouse_db", ["sqlite"], indirect=True)  # the Postgres table refuses a NULL key
def test_rows_without_a_key_are_not_counted(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(None, DAY + timedelta(hours=1), "t")])
    assert unread(warehouse) == (0, None, None)


# -- the report of a nightly run ------------------------------------------------------------------


def nightly_report(warehouse: Warehouse, run_type: str = "scheduled", **config_changes) -> dict:
    """The report task of a run over DAY whose one job completed, as a run of ``run_type``."""
    from types import SimpleNamespace

    from airflow.sdk import DAG

    from bedrock_batch.config import PIPELINES_DIR, load_pipeline
    from bedrock_batch.pipeline_operators import COLLECT_TASK, ON_DEMAND_TASK, PREPARE_TASK, ReportOperator
    from tests.fixtures.task_instance import DAG_ID, OUTCOME, PLAN, RUN_ID, FakeTaskInstance

    plan = {**PLAN, "window": {"start": DAY.isoformat(), "end": NEXT_DAY.isoformat(), "label": "2026-11-20"}}
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", f"{COLLECT_TASK}_0": "success", ON_DEMAND_TASK: "skipped"},
        {(PREPARE_TASK, None): plan, (COLLECT_TASK, 0): OUTCOME},
    )
    with DAG(DAG_ID, schedule=None):
        task = ReportOperator(task_id="report", pipeline=DAG_ID)
    task.__dict__["warehouse"] = warehouse
    task.__dict__["config"] = load_pipeline(PIPELINES_DIR / f"{DAG_ID}.yaml").model_copy(
        update=config_changes
    )
    return task.execute({"ti": ti, "run_id": RUN_ID, "dag_run": SimpleNamespace(run_type=run_type)})


def test_a_nightly_report_counts_and_warns_of_rows_of_the_days_before_that_no_run_read(
    warehouse, warehouse_db, caplog
):
    insert_calls(
        warehouse_db, [("late", DAY - timedelta(minutes=5), "t"), ("old", DAY - timedelta(days=4), "t")]
    )
    summary = nightly_report(warehouse)
    assert summary["unread_before_window"]["rows"] == 1  # the check looks 3 days back by default
    assert "were read by no run" in caplog.text and "reprocess behavior 'All runs'" in caplog.text


def test_a_backfill_or_manual_report_does_not_look_back(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("late", DAY - timedelta(minutes=5), "t")])
    assert "unread_before_window" not in nightly_report(warehouse, run_type="backfill")
    assert "unread_before_window" not in nightly_report(warehouse, run_type="manual")


def test_the_look_back_stops_at_the_pipelines_start_date_and_is_off_at_zero_days(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("before-go-live", DAY - timedelta(days=2), "t")])
    assert nightly_report(warehouse, start_date="2026-11-19")["unread_before_window"]["rows"] == 0
    assert nightly_report(warehouse)["unread_before_window"]["rows"] == 1
    assert nightly_report(warehouse, late_rows_check_days=0)["unread_before_window"] is None


def test_a_look_back_that_cannot_run_is_a_warning_not_a_failed_run(warehouse, warehouse_db, caplog):
    execute(warehouse_db, ["DROP TABLE call_transcripts"])
    summary = nightly_report(warehouse)
    assert "call_transcripts" in summary["unread_before_window"]["error"]
    assert "Could not count the rows no run has read" in caplog.text
