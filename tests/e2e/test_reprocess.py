"""Reprocessing days that are already summarized: the runs rerun, Bedrock sees no new job.

Runs after the other end-to-end tests (MUTATES_STACK): it reruns the first backfill's days.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import run_backfill

pytestmark = [pytest.mark.airflow_stack, pytest.mark.timeout(600)]

MUTATES_STACK = True


def test_reprocessing_summarized_days_submits_no_new_job(airflow_stack, backfill):
    """Reprocess "completed" reruns every day; rows already summarized for the prompt are skipped."""
    with airflow_stack.warehouse() as db:
        before = db.execute("SELECT COUNT(*), MAX(loaded_at) FROM call_summaries").fetchone()
    again = run_backfill(airflow_stack, backfill.days, reprocess_behavior="completed")
    with airflow_stack.warehouse() as db:
        after = db.execute("SELECT COUNT(*), MAX(loaded_at) FROM call_summaries").fetchone()
    assert {run["state"] for run in again.runs} == {"success"}
    assert len(airflow_stack.aws_admin.jobs()) == again.jobs_before
    assert after == before
