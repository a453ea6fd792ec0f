"""The run summary: where every source row went, tokens used, and what it cost at batch prices."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from bedrock_batch.config import INCLUDE_DIR

PRICES_FILE = INCLUDE_DIR / "prices.yaml"


def load_prices(path: Path = PRICES_FILE) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))


def estimate_cost(
    model_id: str, input_tokens: int, output_tokens: int, prices: Mapping[str, Any]
) -> float | None:
    """Batch price in USD, from the longest price-table prefix matching the model id (None if unknown)."""
    from bedrock_batch.models import base_model_id

    bare = base_model_id(model_id)  # an inference profile's ARN or cross-region id has its base price
    matches = [prefix for prefix in prices.get("models", {}) if bare.startswith(prefix)]
    if not matches:
        return None
    price = prices["models"][max(matches, key=len)]
    discount = float(prices.get("batch_discount", 0.5))
    return round((input_tokens * price["input"] + output_tokens * price["output"]) / 1000 * discount, 6)


def run_cost(
    model_id: str,
    outcomes: Iterable[Mapping[str, Any]],
    on_demand: Mapping[str, Any] | None,
    prices: Mapping[str, Any],
    *,
    on_demand_model_id: str | None = None,
) -> float | None:
    """
    Batch jobs' tokens at the batch discount; on-demand tokens at the full (on-demand) price of
    ``on_demand_model_id`` where it names a model, else of ``model_id`` (a custom model's deployment
    names none: it runs the batch model).
    """
    from bedrock_batch.models import opaque_model_kind

    def tokens(parts: Iterable[Mapping[str, Any]], name: str) -> int:
        return sum(int(part.get(name) or 0) for part in parts)

    outcomes = list(outcomes)
    batch_in, batch_out = tokens(outcomes, "input_tokens"), tokens(outcomes, "output_tokens")
    batch = estimate_cost(model_id, batch_in, batch_out, prices)
    if batch is None or not on_demand:
        return batch
    called = (
        on_demand_model_id if on_demand_model_id and not opaque_model_kind(on_demand_model_id) else model_id
    )
    on_demand_in, on_demand_out = tokens([on_demand], "input_tokens"), tokens([on_demand], "output_tokens")
    full = estimate_cost(called, on_demand_in, on_demand_out, {**prices, "batch_discount": 1.0})
    if full is None and on_demand_in + on_demand_out:
        return None  # an on-demand model with no price: unknown, rather than a cost too low
    return round(batch + (full or 0.0), 6)


def summarize_run(
    *,
    plan: Mapping[str, Any],
    outcomes: Iterable[Mapping[str, Any]],
    on_demand: Mapping[str, Any] | None,
    prices: Mapping[str, Any],
) -> dict[str, Any]:
    """Fold the plan and every job's outcome into one summary (small, JSON-safe)."""
    counts = plan.get("counts", {})
    outcomes = list(outcomes)
    parts = [*outcomes, *([on_demand] if on_demand else [])]

    def total(name: str) -> int:
        return sum(int(part.get(name) or 0) for part in parts)

    input_tokens, output_tokens = total("input_tokens"), total("output_tokens")
    summary = {
        "pipeline": plan.get("pipeline"),
        "window": plan.get("window", {}).get("label"),
        "model_id": plan.get("model_id"),
        "on_demand_model_id": plan.get("on_demand_model_id") or plan.get("model_id"),
        "prompt_version": plan.get("prompt_version"),
        "dry_run": bool(plan.get("dry_run")),
        "source_rows": int(counts.get("source_rows", 0)),
        "rejected": int(counts.get("rejected", 0)),
        "carried_over": int(counts.get("carried_over", 0)),
        "left_unread": int(counts.get("left_unread", 0)),
        "submitted": sum(int(job.get("records", 0)) for job in plan.get("jobs", [])),
        "on_demand": int(counts.get("on_demand", 0)),
        "jobs_planned": len(plan.get("jobs", [])),
        "jobs_collected": len(outcomes),
        "job_statuses": {o.get("job_name"): o.get("status") for o in outcomes},
        "summarized": total("summarized"),
        "model_errors": total("model_errors"),
        "not_processed": total("not_processed"),
        "output_unreadable": total("output_unreadable"),
        "quarantined_lines": total("quarantined"),
        "unexpected_lines": total("unexpected"),
        "manifest_problems": {
            str(o.get("job_name")): str(o["manifest_problem"]) for o in outcomes if o.get("manifest_problem")
        },
        "retry": total("retry"),
        "dead_lettered": total("dead_lettered"),
        "on_demand_refused": int((on_demand or {}).get("refused") or 0),
        "on_demand_taken_elsewhere": int((on_demand or {}).get("taken_elsewhere") or 0),
        "on_demand_refusal": (on_demand or {}).get("refusal"),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
        "estimated_cost_usd": run_cost(
            str(plan.get("model_id")),
            outcomes,
            on_demand,
            prices,
            on_demand_model_id=plan.get("on_demand_model_id"),
        ),
    }
    summary["errored"] = sum(
        summary[name] for name in ("rejected", "model_errors", "not_processed", "output_unreadable")
    )
    return summary


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few aligned lines for the task log and the demo's output."""
    cost = summary.get("estimated_cost_usd")
    rows = [
        ("window", summary.get("window")),
        ("model", summary.get("model_id")),
        ("source rows", summary.get("source_rows")),
        ("submitted (batch)", summary.get("submitted")),
        ("on demand", summary.get("on_demand")),
        ("summarized", summary.get("summarized")),
        ("rejected before submit", summary.get("rejected")),
        ("model errors", summary.get("model_errors")),
        ("not processed by the job", summary.get("not_processed")),
        ("output unreadable", summary.get("output_unreadable")),
        ("carried over", summary.get("carried_over")),
        ("left unread (record_limit)", summary.get("left_unread")),
        ("queued for retry", summary.get("retry")),
        ("dead-lettered", summary.get("dead_lettered")),
        ("input / output tokens", f"{summary.get('input_tokens')} / {summary.get('output_tokens')}"),
        (
            # Batch tokens at the batch discount, on-demand ones at the full price.
            "estimated cost" if not summary.get("on_demand") else "estimated cost (with on demand)",
            "unknown model price" if cost is None else f"${cost:.4f}",
        ),
        ("jobs", f"{summary.get('jobs_collected')}/{summary.get('jobs_planned')} collected"),
    ]
    if summary.get("on_demand") and summary.get("on_demand_model_id") not in (None, summary.get("model_id")):
        rows.insert(2, ("on-demand model", summary["on_demand_model_id"]))
    # Billed output the run could not join to a record, and outputs at odds with their manifest: rare,
    # so shown only when they happened.
    unread = summary.get("unread_before_window") or {}
    if unread.get("rows"):
        rows.append(
            ("read by no run (days before)", f"{unread['rows']} rows, {unread['first']} .. {unread['last']}")
        )
    if summary.get("on_demand_refused"):
        rows.append(
            (
                "on demand refused",
                f"{summary['on_demand_refused']} carried over ({summary.get('on_demand_refusal')})",
            )
        )
    if summary.get("on_demand_taken_elsewhere"):
        rows.append(
            (
                "on demand taken elsewhere",
                f"{summary['on_demand_taken_elsewhere']} (another run took them after this one read them)",
            )
        )
    if summary.get("unexpected_lines"):
        rows.append(
            ("output lines not joined", f"{summary['unexpected_lines']} (not in the record map, or repeated)")
        )
    for job_name, problem in (summary.get("manifest_problems") or {}).items():
        rows.append(("manifest problem", f"{job_name}: {problem}"))
    return "\n".join(f"  {name:<26} {value}" for name, value in rows)
