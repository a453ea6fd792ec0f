"""The nightly DAG end to end through `airflow dags test` on the stand-in."""

from __future__ import annotations

import datetime as dt

import pytest

DAY = dt.date(2026, 11, 10)


def test_nightly_run_accounts_for_every_row_on_sqlite(run_pipeline, sqlite_warehouse):
    run = run_pipeline(sqlite_warehouse, DAY, seed_count=300)
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert counts["source_rows"] == 300
    assert counts["unaccounted"] == 0
    assert counts["duplicated"] == 0
    assert counts["summarized"] > 250


@pytest.mark.postgres
def test_nightly_run_accounts_for_every_row_on_postgres(run_pipeline, postgres_warehouse):
    run = run_pipeline(postgres_warehouse, DAY, seed_count=300)
    assert run.returncode == 0, run.output[-4000:]
    counts = run.account()
    assert counts["source_rows"] == 300
    assert counts["unaccounted"] == 0
    assert counts["summarized"] > 250
