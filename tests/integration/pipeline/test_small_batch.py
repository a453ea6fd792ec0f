"""Runs with fewer records than a batch job's minimum, under each small-batch policy."""

from __future__ import annotations

import datetime as dt

import pytest

from bedrock_batch.errors import QuotaError
from bedrock_batch.warehouse import Warehouse
from tests.integration.pipeline.support import DAY, tiny_quotas

QUOTAS = tiny_quotas(min_records_per_job=10)


def pending(harness) -> dict[str, str]:
    return dict(harness.query("SELECT source_key, reason FROM call_summary_pending"))


def test_carry_over_queues_the_records_and_submits_nothing(harness):
    keys = harness.add_calls(4)
    prepared = harness.prepare(QUOTAS)
    assert prepared.plan["jobs"] == [] and prepared.plan["on_demand"] is None
    assert prepared.counts["carried_over"] == 4
    assert pending(harness) == dict.fromkeys(keys, "carried_over")


def test_carried_over_records_are_read_by_the_next_run_and_carried_again_while_young(harness):
    keys = harness.add_calls(4)
    harness.prepare(QUOTAS)
    first_seen = harness.query("SELECT source_key, first_seen_at FROM call_summary_pending")
    later = harness.prepare(QUOTAS, day=DAY + dt.timedelta(days=1))
    assert later.counts["by_origin"] == {"carried_over": 4}
    assert later.counts["carried_over"] == 4
    assert pending(harness) == dict.fromkeys(keys, "carried_over")
    assert harness.query("SELECT source_key, first_seen_at FROM call_summary_pending") == first_seen


def test_records_carried_past_max_age_days_go_on_demand_and_are_loaded(harness):
    keys = harness.add_calls(4)
    harness.prepare(QUOTAS)
    old = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(days=4)
    stamp = old.strftime("%Y-%m-%d %H:%M:%S") if harness.db.dialect == "sqlite" else old
    harness.execute(["UPDATE call_summary_pending SET first_seen_at = ?"], (stamp,))
    later = harness.prepare(QUOTAS, day=DAY + dt.timedelta(days=1))
    assert later.counts["on_demand"] == 4 and later.counts["carried_over"] == 0
    assert sorted(harness.on_demand_keys(later)) == sorted(keys)
    counts = harness.run_on_demand(later)
    assert counts["summarized"] == 4
    assert pending(harness) == {}
    loaded = harness.query("SELECT source_key, run_id, summary FROM call_summaries")
    assert sorted(key for key, _, _ in loaded) == sorted(keys)
    assert all(run_id == later.run_id and summary.startswith("Summary") for _, run_id, summary in loaded)


def test_policy_on_demand_summarizes_through_bedrock_runtime(harness, local_aws_clean):
    harness.configure(small_batch__policy="on_demand")
    keys = harness.add_calls(3)
    harness.insert([("empty", "")])
    local_aws_clean.admin.clear_calls()
    prepared = harness.prepare(QUOTAS)
    assert prepared.plan["jobs"] == []
    assert (prepared.counts["on_demand"], prepared.counts["rejected"]) == (3, 1)
    counts = harness.run_on_demand(prepared)
    assert (counts["summarized"], counts["errored"]) == (3, 0)
    assert sorted(key for (key,) in harness.query("SELECT source_key FROM call_summaries")) == sorted(keys)
    assert local_aws_clean.calls().count("bedrock:InvokeModel") == 3
    assert "bedrock:CreateModelInvocationJob" not in local_aws_clean.calls()


def test_rows_that_arrive_after_a_small_batch_was_counted_are_carried_over_not_called_on_demand(
    harness, monkeypatch
):
    """A bulk insert between the count and the read must not go on demand at twice the batch price."""
    from bedrock_batch.prepare import RunPreparer

    harness.configure(small_batch__policy="on_demand")
    keys = harness.add_calls(8)
    counted = RunPreparer._count
    monkeypatch.setattr(RunPreparer, "_count", lambda self, limit: min(counted(self, limit), 3))

    prepared = harness.prepare(QUOTAS)

    assert (prepared.counts["on_demand"], prepared.counts["carried_over"]) == (3, 5)
    called = harness.on_demand_keys(prepared)
    assert len(called) == 3
    assert pending(harness) == dict.fromkeys(set(keys) - set(called), "carried_over")


def test_refused_on_demand_requests_carry_the_records_over_without_spending_an_attempt(
    harness, local_aws_clean
):
    harness.configure(small_batch__policy="on_demand")
    keys = harness.add_calls(3)
    prepared = harness.prepare(QUOTAS)
    local_aws_clean.admin.set_faults(
        access_denied={"InvokeModel": 100}
    )  # e.g. the role lost bedrock:InvokeModel

    counts = harness.run_on_demand(prepared)

    assert (counts["summarized"], counts["carried_over"]) == (0, 3)

    assert harness.query("SELECT COUNT(*) FROM call_summary_errors") == [(0,)]
    queued = harness.query(
        "SELECT source_key, reason, attempts FROM call_summary_pending ORDER BY source_key"
    )
    assert queued == [(key, "carried_over", 0) for key in sorted(keys)]


def test_on_demand_requests_throttled_to_the_end_are_retried_without_spending_an_attempt(
    harness, local_aws_clean, monkeypatch
):
    from bedrock_batch import on_demand

    monkeypatch.setattr(on_demand, "BASE_DELAY", 0.001)  # the loop's pauses, not its number of tries
    harness.configure(small_batch__policy="on_demand", max_attempts=1)
    keys = harness.add_calls(3)
    prepared = harness.prepare(QUOTAS)
    local_aws_clean.admin.set_faults(throttle={"InvokeModel": 1000})  # an on-demand quota too small

    counts = harness.run_on_demand(prepared)

    assert (counts["summarized"], counts["retry"], counts["dead_lettered"]) == (0, 3, 0)
    assert set(harness.query("SELECT code FROM call_summary_errors")) == {("429",)}
    assert pending(harness) == dict.fromkeys(keys, "retry")
    local_aws_clean.admin.reset_faults()
    later = harness.prepare(QUOTAS, day=DAY + dt.timedelta(days=1))  # max_attempts 1: tried once only
    assert later.counts["on_demand"] == 3
    assert harness.run_on_demand(later)["summarized"] == 3


def test_a_retry_after_a_failed_load_calls_only_the_records_not_yet_loaded(
    harness, local_aws_clean, monkeypatch
):
    # One call at a time: the answers are loaded two by two, so the first try loads exactly two.
    harness.configure(small_batch__policy="on_demand", small_batch__on_demand_concurrency=1)
    keys = harness.add_calls(5)
    prepared = harness.prepare(QUOTAS)
    monkeypatch.setattr("bedrock_batch.on_demand.ANSWERS_PER_LOAD", 2)
    load_job = Warehouse.load_job
    loads = []

    def dies_on_the_second_load(self, *args, **kwargs):
        loads.append(len(args[0]))
        if len(loads) == 2:
            raise ConnectionError("the worker was killed")  # after the first load was committed
        return load_job(self, *args, **kwargs)

    monkeypatch.setattr(Warehouse, "load_job", dies_on_the_second_load)
    local_aws_clean.admin.clear_calls()
    with pytest.raises(ConnectionError):
        harness.run_on_demand(prepared)
    first_try_calls = local_aws_clean.calls().count("bedrock:InvokeModel")
    monkeypatch.setattr(Warehouse, "load_job", load_job)
    local_aws_clean.admin.clear_calls()

    counts = harness.run_on_demand(prepared)  # the task's retry

    assert loads == [2, 2]  # the second load failed: its two answers are lost
    assert first_try_calls in (4, 5)  # the fifth call may have begun before the load failed
    assert local_aws_clean.calls().count("bedrock:InvokeModel") == 3  # not the two loaded before
    assert (counts["earlier_loaded"], counts["earlier_summarized"], counts["summarized"]) == (2, 2, 3)
    assert sorted(key for (key,) in harness.query("SELECT source_key FROM call_summaries")) == sorted(keys)
    assert pending(harness) == {}


def test_a_refused_batch_called_again_after_a_later_run_summarized_it_calls_nothing(harness, local_aws_clean):
    harness.configure(small_batch__policy="on_demand")
    keys = harness.add_calls(3)
    refused = harness.prepare(QUOTAS)
    local_aws_clean.admin.set_faults(access_denied={"InvokeModel": 100})
    assert harness.run_on_demand(refused)["carried_over"] == 3
    local_aws_clean.admin.reset_faults()
    later = harness.prepare(QUOTAS, day=DAY + dt.timedelta(days=1))  # takes the carried-over keys
    assert harness.run_on_demand(later)["summarized"] == 3
    local_aws_clean.admin.clear_calls()

    counts = harness.run_on_demand(refused)  # the refused run's task, cleared by an operator

    assert local_aws_clean.calls().count("bedrock:InvokeModel") == 0
    assert (counts["taken_elsewhere"], counts["summarized"]) == (3, 0)
    loaded = harness.query("SELECT source_key, run_id FROM call_summaries ORDER BY source_key")
    assert loaded == [(key, later.run_id) for key in sorted(keys)]


def test_policy_fail_raises_naming_the_count_and_the_minimum(harness):
    harness.configure(small_batch__policy="fail")
    harness.add_calls(4)
    harness.insert([("empty", "")])
    with pytest.raises(QuotaError, match=r"4 records is under the minimum of 10") as raised:
        harness.prepare(QUOTAS)
    assert "small_batch.policy is 'fail'" in str(raised.value)
    # The rejected row was still recorded before the run failed.
    assert harness.query("SELECT source_key, code FROM call_summary_errors") == [("empty", "empty_text")]
    assert pending(harness) == {}


@pytest.mark.postgres
def test_carry_over_then_on_demand_on_postgres(pg_harness):
    keys = pg_harness.add_calls(4)
    pg_harness.prepare(QUOTAS)
    assert pending(pg_harness) == dict.fromkeys(keys, "carried_over")
    pg_harness.configure(small_batch__policy="on_demand")
    later = pg_harness.prepare(QUOTAS, day=DAY + dt.timedelta(days=1))
    assert pg_harness.run_on_demand(later)["summarized"] == 4
    assert pending(pg_harness) == {}
    assert pg_harness.query("SELECT COUNT(*) FROM call_summaries") == [(4,)]
