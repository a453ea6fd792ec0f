"""The run summary: counts folded from the plan and the job outcomes, and the cost at batch prices."""

from __future__ import annotations

import re

import pytest

from bedrock_batch.report import PRICES_FILE, estimate_cost, format_summary, load_prices, summarize_run

HAIKU = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(scope="module")
def prices():
    return load_prices()


def plan(**changes):
    base = {
        "pipeline": "summarize_calls",
        "window": {"label": "2026-11-10"},
        "model_id": HAIKU,
        "prompt_version": "v1",
        "dry_run": False,
        "counts": {"source_rows": 520, "rejected": 12, "staged": 400, "carried_over": 8, "on_demand": 0},
        "jobs": [{"job_name": "j001", "records": 200}, {"job_name": "j002", "records": 200}],
    }
    return {**base, **changes}


def outcome(name, status, **counts):
    return {"job_name": name, "status": status, **counts}


def test_the_shipped_price_table_prices_the_shipped_model(prices):
    assert PRICES_FILE.is_file()
    assert 0 < prices["batch_discount"] <= 1
    assert estimate_cost(HAIKU, 1000, 1000, prices) is not None


def test_cost_is_the_batch_discount_of_the_per_thousand_token_prices():
    table = {
        "batch_discount": 0.5,
        "models": {"anthropic.claude-3-5-haiku": {"input": 0.0008, "output": 0.004}},
    }
    # (2000 * 0.0008 + 500 * 0.004) / 1000 * 0.5 = (1.6 + 2.0) / 1000 * 0.5
    assert estimate_cost(HAIKU, 2000, 500, table) == pytest.approx(0.0018)


def test_a_region_prefixed_model_id_has_the_price_of_its_base_model(prices):
    assert estimate_cost(f"us.{HAIKU}", 10_000, 1_000, prices) == estimate_cost(HAIKU, 10_000, 1_000, prices)


def test_an_inference_profile_arn_has_the_price_of_its_base_model(prices):
    arn = f"arn:aws:bedrock:eu-west-1:123456789012:inference-profile/eu.{HAIKU}"
    assert estimate_cost(arn, 10_000, 1_000, prices) == estimate_cost(HAIKU, 10_000, 1_000, prices)
    assert estimate_cost(arn, 10_000, 1_000, prices) is not None


def test_the_longest_matching_prefix_wins():
    table = {
        "models": {
            "anthropic.claude-3": {"input": 1, "output": 1},
            "anthropic.claude-3-5-haiku": {"input": 0, "output": 0},
        }
    }
    assert estimate_cost(HAIKU, 1000, 1000, table) == 0


def test_an_unknown_model_has_no_cost_rather_than_a_wrong_one(prices):
    assert estimate_cost("acme.unknown-model-v1", 1000, 1000, prices) is None


def test_summary_adds_up_the_jobs_and_on_demand(prices):
    outcomes = [
        outcome(
            "j001",
            "Completed",
            summarized=195,
            model_errors=5,
            retry=5,
            input_tokens=90_000,
            output_tokens=9_000,
        ),
        outcome(
            "j002",
            "PartiallyCompleted",
            summarized=150,
            not_processed=50,
            quarantined=1,
            retry=50,
            dead_lettered=2,
            input_tokens=70_000,
            output_tokens=7_000,
        ),
    ]
    on_demand = {
        "job_name": "on-demand",
        "status": "OnDemand",
        "summarized": 3,
        "input_tokens": 1000,
        "output_tokens": 100,
    }
    summary = summarize_run(plan=plan(), outcomes=outcomes, on_demand=on_demand, prices=prices)
    assert summary["source_rows"] == 520
    assert summary["submitted"] == 400
    assert (summary["jobs_planned"], summary["jobs_collected"]) == (2, 2)
    assert summary["job_statuses"] == {"j001": "Completed", "j002": "PartiallyCompleted"}
    assert summary["summarized"] == 195 + 150 + 3
    assert (summary["model_errors"], summary["not_processed"], summary["quarantined_lines"]) == (5, 50, 1)
    assert (summary["retry"], summary["dead_lettered"], summary["carried_over"]) == (55, 2, 8)
    assert summary["errored"] == 12 + 5 + 50
    assert (summary["input_tokens"], summary["output_tokens"]) == (161_000, 16_100)
    batch = estimate_cost(HAIKU, 160_000, 16_000, prices)
    full_price = estimate_cost(HAIKU, 1000, 100, {**prices, "batch_discount": 1.0})
    assert summary["estimated_cost_usd"] == pytest.approx(batch + full_price)


def test_on_demand_tokens_cost_the_full_price_not_the_batch_one(prices):
    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
    as_batch = summarize_run(
        plan=plan(), outcomes=[outcome("j001", "Completed", **tokens)], on_demand=None, prices=prices
    )
    as_on_demand = summarize_run(plan=plan(), outcomes=[], on_demand=tokens, prices=prices)
    assert as_on_demand["estimated_cost_usd"] == pytest.approx(
        as_batch["estimated_cost_usd"] / prices["batch_discount"]
    )


SONNET = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CUSTOM_HAIKU = f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{HAIKU}/a1b2c3d4e5f6"
DEPLOYMENT = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3d4e5f6"


def test_on_demand_tokens_cost_the_price_of_the_model_they_were_sent_to(prices):
    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
    summary = summarize_run(
        plan=plan(on_demand_model_id=SONNET), outcomes=[], on_demand={**tokens, "records": 3}, prices=prices
    )
    full_price = {**prices, "batch_discount": 1.0}
    assert summary["estimated_cost_usd"] == pytest.approx(estimate_cost(SONNET, 100_000, 10_000, full_price))
    assert re.search(rf"on-demand model +{re.escape(SONNET)}\n", format_summary({**summary, "on_demand": 3}))


def test_a_custom_models_deployment_costs_its_base_models_price_on_demand(prices):
    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
    summary = summarize_run(
        plan=plan(model_id=CUSTOM_HAIKU, on_demand_model_id=DEPLOYMENT),
        outcomes=[],
        on_demand=tokens,
        prices=prices,
    )
    full_price = {**prices, "batch_discount": 1.0}
    assert summary["estimated_cost_usd"] == pytest.approx(estimate_cost(HAIKU, 100_000, 10_000, full_price))


def test_on_demand_tokens_of_a_model_with_no_price_make_the_cost_unknown(prices):
    tokens = {"input_tokens": 100_000, "output_tokens": 10_000}
    unpriced = "anthropic.claude-opus-4-1-20250805-v1:0"
    summary = summarize_run(
        plan=plan(on_demand_model_id=unpriced), outcomes=[], on_demand=tokens, prices=prices
    )
    assert summary["estimated_cost_usd"] is None


def test_a_dry_run_summary_submits_nothing(prices):
    summary = summarize_run(plan=plan(dry_run=True, jobs=[]), outcomes=[], on_demand=None, prices=prices)
    assert summary["dry_run"] is True
    assert (summary["submitted"], summary["jobs_planned"], summary["summarized"]) == (0, 0, 0)
    assert summary["estimated_cost_usd"] == 0


def test_the_formatted_summary_names_every_bucket_and_the_cost(prices):
    summary = summarize_run(plan=plan(), outcomes=[], on_demand=None, prices=prices)
    text = format_summary(summary)
    for label in ("source rows", "summarized", "carried over", "dead-lettered", "estimated cost"):
        assert label in text
    assert "with on demand" not in text
    assert "estimated cost (with on demand)" in format_summary({**summary, "on_demand": 3})
    unknown = format_summary({**summary, "estimated_cost_usd": None})
    assert "unknown model price" in unknown


def test_output_lines_of_no_record_and_manifest_problems_reach_the_summary(prices):
    outcomes = [
        outcome(
            "j001", "Completed", summarized=200, unexpected=3, manifest_problem="manifest says 203 records"
        ),
        outcome("j002", "Completed", summarized=200),
    ]
    summary = summarize_run(plan=plan(), outcomes=outcomes, on_demand=None, prices=prices)

    assert summary["unexpected_lines"] == 3
    assert summary["manifest_problems"] == {"j001": "manifest says 203 records"}
    text = format_summary(summary)
    assert "3 (not in the record map, or repeated)" in text
    assert "j001: manifest says 203 records" in text


def test_a_clean_run_shows_no_manifest_or_stray_line_rows(prices):
    summary = summarize_run(
        plan=plan(), outcomes=[outcome("j001", "Completed")], on_demand=None, prices=prices
    )
    text = format_summary(summary)
    assert "manifest problem" not in text and "output lines not joined" not in text


def test_refused_on_demand_records_are_named_in_the_summary(prices):
    on_demand = {"summarized": 2, "refused": 10, "refusal": "AccessDeniedException: no"}
    summary = summarize_run(plan=plan(), outcomes=[], on_demand=on_demand, prices=prices)
    assert (summary["on_demand_refused"], summary["on_demand_refusal"]) == (10, "AccessDeniedException: no")
    assert "10 carried over (AccessDeniedException: no)" in format_summary(summary)
    clean = summarize_run(plan=plan(), outcomes=[], on_demand={"summarized": 2}, prices=prices)
    assert "on demand refused" not in format_summary(clean)


def test_on_demand_records_another_run_took_are_named_in_the_summary(prices):
    on_demand = {"summarized": 0, "taken_elsewhere": 3}
    summary = summarize_run(plan=plan(), outcomes=[], on_demand=on_demand, prices=prices)
    assert summary["on_demand_taken_elsewhere"] == 3
    assert "3 (another run took them after this one read them)" in format_summary(summary)
    clean = summarize_run(plan=plan(), outcomes=[], on_demand={"summarized": 2}, prices=prices)
    assert "taken elsewhere" not in format_summary(clean)
