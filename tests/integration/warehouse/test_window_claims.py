"""Specification of window claims: two runs never stage the same days while one has them in flight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bedrock_batch.errors import WindowBusyError
from bedrock_batch.warehouse import Warehouse

from .conftest import PROMPT, TABLES, query

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def claim(wh: Warehouse, run_id: str, start: datetime = DAY, end: datetime = NEXT_DAY, **kwargs) -> list[str]:
    kwargs.setdefault("prompt_version", PROMPT)
    return wh.claim_window(run_id=run_id, start=start, end=end, **kwargs)


def holders(db) -> list[str]:
    return [row[0] for row in query(db, f"SELECT run_id FROM {TABLES.window_claims_table} ORDER BY run_id")]


def test_a_run_over_days_another_live_run_holds_is_refused_naming_that_run(warehouse):
    claim(warehouse, "scheduled__2026-11-20")

    with pytest.raises(WindowBusyError, match=r"run 'scheduled__2026-11-20' holds the window 2026-11-20"):
        claim(warehouse, "manual__1", DAY + timedelta(hours=12), NEXT_DAY + timedelta(days=1))


def test_adjacent_windows_do_not_overlap(warehouse, warehouse_db):
    claim(warehouse, "scheduled__2026-11-20")
    claim(warehouse, "scheduled__2026-11-21", NEXT_DAY, NEXT_DAY + timedelta(days=1))

    assert holders(warehouse_db) == ["scheduled__2026-11-20", "scheduled__2026-11-21"]


def test_a_rerun_of_the_same_run_claims_its_window_again(warehouse, warehouse_db):
    claim(warehouse, "scheduled__2026-11-20")
    claim(warehouse, "scheduled__2026-11-20")

    assert holders(warehouse_db) == ["scheduled__2026-11-20"]


def test_another_prompt_version_is_not_blocked(warehouse, warehouse_db):
    claim(warehouse, "scheduled__2026-11-20")
    claim(warehouse, "manual__v2", prompt_version="v2")

    assert holders(warehouse_db) == ["manual__v2", "scheduled__2026-11-20"]


def test_a_released_window_can_be_claimed_by_the_next_run(warehouse, warehouse_db):
    claim(warehouse, "scheduled__2026-11-20")

    assert warehouse.release_window(run_id="scheduled__2026-11-20", prompt_version=PROMPT) == 1
    claim(warehouse, "manual__1")
    assert holders(warehouse_db) == ["manual__1"]


def test_releasing_a_window_never_held_says_so(warehouse):
    assert warehouse.release_window(run_id="never", prompt_version=PROMPT) == 0


def test_a_run_releases_the_claims_of_every_prompt_version_when_none_is_named(warehouse, warehouse_db):
    claim(warehouse, "manual__1")
    claim(warehouse, "manual__1", prompt_version="v2")
    claim(warehouse, "scheduled__2026-11-21", NEXT_DAY, NEXT_DAY + timedelta(days=1))

    assert warehouse.release_window(run_id="manual__1") == 2
    assert holders(warehouse_db) == ["scheduled__2026-11-21"]


def test_the_claims_are_listed_earliest_window_first(warehouse):
    claim(warehouse, "scheduled__2026-11-21", NEXT_DAY, NEXT_DAY + timedelta(days=1))
    claim(warehouse, "scheduled__2026-11-20")

    listed = warehouse.window_claims()

    assert [(c["run_id"], c["prompt_version"]) for c in listed] == [
        ("scheduled__2026-11-20", PROMPT),
        ("scheduled__2026-11-21", PROMPT),
    ]
    assert set(listed[0]) == {"run_id", "prompt_version", "window_start", "window_end", "claimed_at"}


def expiring(warehouse_db) -> Warehouse:
    """A warehouse whose claims are past their TTL as soon as they are made."""
    return Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls", claim_ttl=timedelta(0))


def test_a_claim_older_than_the_ttl_that_nobody_can_vouch_for_no_longer_holds(warehouse_db, warehouse):
    wh = expiring(warehouse_db)
    claim(wh, "died")

    assert claim(wh, "next", run_is_live=lambda run_id: None) == ["died"]
    assert holders(warehouse_db) == ["next"]


def test_a_claim_older_than_the_ttl_still_holds_while_its_run_is_live(warehouse_db, warehouse):
    wh = expiring(warehouse_db)
    claim(wh, "long__running")

    with pytest.raises(WindowBusyError, match="Airflow has it queued or running"):
        claim(wh, "next", run_is_live=lambda run_id: True)


def test_taking_days_over_leaves_other_days_claims_alone(warehouse_db, warehouse):
    wh = expiring(warehouse_db)
    claim(wh, "died")
    claim(wh, "other__day", NEXT_DAY, NEXT_DAY + timedelta(days=1))

    claim(wh, "next")

    assert holders(warehouse_db) == ["next", "other__day"]


def test_a_run_that_claims_the_days_while_another_asks_airflow_keeps_them(warehouse, warehouse_db):
    claim(warehouse, "failed__run")

    def is_live_while_another_run_claims(run_id: str) -> bool:
        claim(warehouse, "backfill__1", DAY + timedelta(hours=6), NEXT_DAY, run_is_live=lambda other: False)
        return False

    with pytest.raises(WindowBusyError, match=r"run 'backfill__1' holds .* it claimed them a moment ago"):
        claim(warehouse, "manual__1", run_is_live=is_live_while_another_run_claims)
    assert holders(warehouse_db) == ["backfill__1"]


def test_the_claim_of_a_run_airflow_reports_finished_is_taken_over(warehouse, warehouse_db):
    claim(warehouse, "failed__run")
    asked: list[str] = []

    def is_live(run_id: str) -> bool:
        asked.append(run_id)
        return False

    assert claim(warehouse, "manual__1", run_is_live=is_live) == ["failed__run"]
    assert asked == ["failed__run"]
    assert holders(warehouse_db) == ["manual__1"]


def test_a_claim_whose_run_state_is_unknown_still_holds(warehouse, warehouse_db):
    claim(warehouse, "scheduled__2026-11-20")

    with pytest.raises(WindowBusyError):
        claim(warehouse, "manual__1", run_is_live=lambda run_id: None)
    assert holders(warehouse_db) == ["scheduled__2026-11-20"]


def test_of_two_runs_claiming_the_same_day_at_once_exactly_one_gets_it(warehouse, warehouse_db):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    def race(day: datetime) -> list[str]:
        start_together = Barrier(2, timeout=30)

        def attempt(run_id: str) -> str:
            start_together.wait()
            try:
                claim(warehouse, run_id, day, day + timedelta(days=1))
            except WindowBusyError:
                return "refused"
            return "claimed"

        with ThreadPoolExecutor(2) as pool:
            return sorted(pool.map(attempt, [f"backfill__{day:%d}", f"manual__{day:%d}"]))

    days = [DAY + timedelta(days=offset) for offset in range(5)]  # a race can go either way: run five
    assert [race(day) for day in days] == [["claimed", "refused"]] * len(days)
    assert len(holders(warehouse_db)) == len(days)
