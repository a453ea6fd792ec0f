"""A 3-day backfill of the nightly DAG, submitted through the REST API exactly as the UI's form does.

Shared by the end-to-end tests: the backfill tests check what it did, the UI tests look at its runs.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

DAG_ID = "summarize_calls"
BACKFILL_TIMEOUT_S = 360.0
FINISHED = {"success", "failed"}


@dataclass
class Backfill:
    id: int
    days: tuple[dt.date, ...]
    runs: list[dict[str, Any]]
    jobs_before: int


def params_conf(api: Any) -> dict[str, Any]:
    """The run conf the trigger form sends: every Param at its default value."""
    params = api.get(f"/dags/{DAG_ID}/details")["params"]
    return {name: spec.get("value") for name, spec in params.items()}


def run_backfill(stack: Any, days: tuple[dt.date, ...], *, reprocess_behavior: str) -> Backfill:
    """Dry run, unpause, create (as Trigger -> Backfill does), then wait for the backfill to complete."""
    api = stack.api
    start = dt.datetime.combine(days[0], dt.time(), tzinfo=dt.UTC)
    end = dt.datetime.combine(days[-1], dt.time(23, 59, 59), tzinfo=dt.UTC)  # the form's "to" is end of day
    body = {
        "dag_id": DAG_ID,
        "from_date": start.isoformat(),
        "to_date": end.isoformat(),
        "max_active_runs": 3,
        "reprocess_behavior": reprocess_behavior,
        "run_backwards": False,
        "dag_run_conf": params_conf(api),
    }
    planned = api.post("/backfills/dry_run", body)
    assert planned["total_entries"] == len(days), planned
    jobs_before = len(stack.aws_admin.jobs())
    api.patch(f"/dags/{DAG_ID}", {"is_paused": False})  # the form's "Unpause on trigger" box
    backfill = api.post("/backfills", body)
    api.wait_for(
        f"backfill {backfill['id']} to complete",
        lambda: api.get(f"/backfills/{backfill['id']}")["completed_at"],
        timeout=BACKFILL_TIMEOUT_S,
    )
    runs = [
        run
        for run in api.get(f"/dags/{DAG_ID}/dagRuns", limit=100, order_by="logical_date")["dag_runs"]
        if run["run_type"] == "backfill" and dt.date.fromisoformat(run["logical_date"][:10]) in days
    ]
    assert len(runs) == len(days), runs  # every test below checks each run: none may be missing
    return Backfill(backfill["id"], days, runs, jobs_before)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Here, tests of modules that set MUTATES_STACK run last: the others look at the first backfill."""
    here = Path(__file__).parent
    slots = [index for index, item in enumerate(items) if here in Path(item.path).parents]
    ours = sorted(
        (items[i] for i in slots), key=lambda item: bool(getattr(item.module, "MUTATES_STACK", False))
    )
    for index, item in zip(slots, ours, strict=True):
        items[index] = item


@pytest.fixture(scope="package")
def airflow_stack(tmp_path_factory) -> Any:
    """The session's stack, narrowed to this package: it stops once the end-to-end tests are done."""
    from tests.fixtures.airflow_stack import running_stack

    with running_stack(tmp_path_factory) as stack:
        yield stack


@pytest.fixture(scope="package")
def backfill(airflow_stack) -> Backfill:
    """The first backfill of the session: three seeded days, up to the day before yesterday."""
    days = airflow_stack.seeded_days[1:]
    return run_backfill(airflow_stack, days, reprocess_behavior="none")
