"""Window claims for the on-call engineer: list them with the holder's state, release one."""

from __future__ import annotations

import datetime as dt
import json
import logging

import pytest

from bedrock_batch import ops
from bedrock_batch.errors import ConfigError

PIPELINE = "summarize_calls"
DAY = dt.datetime(2026, 11, 20, tzinfo=dt.UTC)
STATES = {"scheduled__2026-11-20": "running", "manual__1": "failed"}


def run_state(dag_id: str, run_id: str) -> str | None:
    assert dag_id == PIPELINE
    return STATES.get(run_id)


@pytest.fixture
def warehouse(sqlite_warehouse):
    """The pipeline's warehouse with its tables made, as its first run leaves them."""
    warehouse = ops.pipeline_warehouse(PIPELINE)
    warehouse.ensure_schema()
    return warehouse


def hold(warehouse, run_id: str, day: dt.datetime = DAY) -> None:
    warehouse.claim_window(run_id=run_id, prompt_version="v1", start=day, end=day + dt.timedelta(days=1))


def test_each_claim_is_listed_with_its_holders_state_in_airflow(warehouse):
    hold(warehouse, "scheduled__2026-11-20")
    hold(warehouse, "gone__1", DAY + dt.timedelta(days=1))

    rows = ops.window_claim_rows(warehouse, PIPELINE, run_state)

    assert [(row["run_id"], row["run_state"], row["window_start"][:10]) for row in rows] == [
        ("scheduled__2026-11-20", "running", "2026-11-20"),
        ("gone__1", ops.NOT_IN_AIRFLOW, "2026-11-21"),
    ]
    assert {row["pipeline"] for row in rows} == {PIPELINE}


def test_releasing_a_claim_frees_the_days_for_another_run(warehouse):
    hold(warehouse, "gone__1")

    result = ops.release_window_claim(warehouse, PIPELINE, "gone__1", run_state)

    assert result["released"] == 1
    assert result["run_state"] == ops.NOT_IN_AIRFLOW
    hold(warehouse, "manual__2")  # no WindowBusyError


def test_releasing_the_claim_of_a_run_still_running_warns_that_rows_may_be_paid_twice(warehouse, caplog):
    hold(warehouse, "scheduled__2026-11-20")

    with caplog.at_level(logging.WARNING, logger="bedrock_batch.ops"):
        ops.release_window_claim(warehouse, PIPELINE, "scheduled__2026-11-20", run_state)

    assert "which Airflow has as running" in caplog.text


@pytest.mark.parametrize("run_id", [None, "  "])
def test_release_needs_a_run_id(warehouse, run_id):
    with pytest.raises(ConfigError, match="run_id: name the run"):
        ops.release_window_claim(warehouse, PIPELINE, run_id, run_state)


def test_releasing_a_run_that_holds_nothing_is_refused_naming_it(warehouse):
    with pytest.raises(ConfigError, match=r"run 'manual__1' holds no window of pipeline 'summarize_calls'"):
        ops.release_window_claim(warehouse, PIPELINE, "manual__1", run_state)


def test_listing_windows_never_migrates_a_pipelines_tables(sqlite_warehouse):
    untouched = ops.pipeline_warehouse(PIPELINE)

    rows, failures = ops.list_window_claims([PIPELINE], run_state)

    assert (rows, failures) == ([], {})
    assert untouched.applied_versions() == set()


def test_releasing_a_window_in_tables_from_before_window_claims_finds_none(sqlite_warehouse):
    with pytest.raises(ConfigError, match=r"run 'manual__1' holds no window"):
        ops.release_window_claim(ops.pipeline_warehouse(PIPELINE), PIPELINE, "manual__1", run_state)
    assert ops.pipeline_warehouse(PIPELINE).applied_versions() == set()


def test_an_unknown_pipeline_is_refused_naming_the_known_ones(sqlite_warehouse):
    with pytest.raises(ConfigError, match=r"pipeline 'nope': no such pipeline config \(known: summarize"):
        ops.pipeline_warehouse("nope")


def test_the_ops_dag_lists_and_releases_a_claim_airflow_cannot_vouch_for(warehouse, airflow_db):
    """The real chain: `airflow dags test` of the ops DAG, the Task SDK asked about the holder."""
    hold(warehouse, "scheduled__gone")

    listed = airflow_db("dags", "test", "bedrock_batch_ops", "-c", json.dumps({"action": "windows"}))
    conf = {"action": "release_window", "pipeline": PIPELINE, "run_id": "scheduled__gone"}
    released = airflow_db("dags", "test", "bedrock_batch_ops", "-c", json.dumps(conf))

    assert listed.returncode == 0, (listed.stdout + listed.stderr)[-4000:]
    assert "1 window claims" in listed.stdout + listed.stderr
    assert f"scheduled__gone  {ops.NOT_IN_AIRFLOW}" in listed.stdout + listed.stderr
    assert released.returncode == 0, (released.stdout + released.stderr)[-4000:]
    assert ops.pipeline_warehouse(PIPELINE).window_claims() == []


def test_a_pipeline_whose_warehouse_cannot_be_reached_is_named_and_the_others_are_still_listed(
    warehouse, monkeypatch
):
    from bedrock_batch.warehouse import Warehouse, WarehouseTables
    from scripts.local_env import free_port

    monkeypatch.setenv(
        "AIRFLOW_CONN_DOWN_WAREHOUSE",
        json.dumps(
            {
                "conn_type": "postgres",
                "host": "127.0.0.1",
                "port": free_port(),  # nothing listens there
                "login": "nobody",
                "schema": "nowhere",
                "extra": {"connect_timeout": 2},
            }
        ),
    )
    down = Warehouse("down_warehouse", WarehouseTables("s", "e", "p"), pipeline="calls_eu")
    hold(warehouse, "scheduled__2026-11-20")

    def warehouse_of(name: str) -> Warehouse:
        if name == "calls_eu":
            down.ensure_schema()
            return down
        return ops.pipeline_warehouse(name)

    rows, failures = ops.list_window_claims(["calls_eu", PIPELINE], run_state, warehouse_of=warehouse_of)

    assert [(row["pipeline"], row["run_id"]) for row in rows] == [(PIPELINE, "scheduled__2026-11-20")]
    assert list(failures) == ["calls_eu"]
    assert "OperationalError" in failures["calls_eu"]
