"""Pieces of prepare that need no warehouse or S3: names, runtime settings, quotas, overdue rows."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from bedrock_batch.config import PipelineConfig
from bedrock_batch.errors import ConfigError
from bedrock_batch.operators import bedrock_job_name
from bedrock_batch.prepare import (
    PrepareCounts,
    RunContext,
    RuntimeSettings,
    _is_overdue,
    job_name_prefix,
    resolve_quotas,
    run_job_marker,
    source_row,
)
from bedrock_batch.quotas import default_quotas
from bedrock_batch.staging import JOB_NAME_PATTERN
from bedrock_batch.windows import local_day

SHIPPED_CONFIG = Path(__file__).resolve().parents[2] / "include" / "pipelines" / "summarize_calls.yaml"

NOW = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"


def pipeline_config(jobs: dict | None = None) -> PipelineConfig:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    raw["jobs"].update(jobs or {})
    return PipelineConfig.model_validate(raw)


def test_job_names_are_readable_valid_and_short_enough_for_every_job_index():
    run = RunContext("summarize_calls", "scheduled__2026-11-10T00:00:00+00:00")
    prefix = job_name_prefix("summarize_calls", local_day(dt.date(2026, 11, 10), "UTC"), run.key)
    assert prefix.startswith("summarize-calls-20261110-")
    longest = f"{prefix}-j999"
    assert JOB_NAME_PATTERN.fullmatch(longest) and len(longest) <= 63


def test_a_runs_job_marker_is_in_each_of_its_job_names_and_no_other_runs():
    window = local_day(dt.date(2026, 11, 10), "UTC")
    ours, theirs = "scheduled__2026-11-10T00:00:00+00:00", "manual__2026-11-11T08:00:00+00:00"
    marker = run_job_marker("summarize_calls", ours)
    keys = {run_id: RunContext("summarize_calls", run_id).key for run_id in (ours, theirs)}
    names = {
        run: bedrock_job_name(job_name_prefix("summarize_calls", window, key) + "-j007", "c0ffee" * 8)
        for run, key in keys.items()
    }

    assert marker in names[ours] and marker not in names[theirs]
    assert marker[0].isalnum()  # ListModelInvocationJobs' nameContains must start with one


def test_a_long_pipeline_name_still_gives_valid_job_names():
    run = RunContext("d", "manual__2026-11-10T00:00:00+00:00")
    prefix = job_name_prefix(
        "a_very_long_pipeline_name_for_summaries_of_calls", local_day(dt.date(2026, 1, 1), "UTC"), run.key
    )
    assert JOB_NAME_PATTERN.fullmatch(f"{prefix}-j001") and len(f"{prefix}-j999") <= 63


def test_two_runs_of_the_same_day_get_different_job_names():
    window = local_day(dt.date(2026, 11, 10), "UTC")
    first = job_name_prefix("p", window, RunContext("d", "manual__a").key)
    second = job_name_prefix("p", window, RunContext("d", "manual__b").key)
    assert first != second


def test_runtime_settings_name_the_setting_left_empty():
    with pytest.raises(ConfigError, match=r"staging.input_bucket rendered empty"):
        RuntimeSettings(role_arn=ROLE, input_bucket="", output_bucket="out-bucket").check("summarize_calls")


def test_runtime_settings_reject_an_invalid_role_arn():
    with pytest.raises(ConfigError, match=r"aws.role_arn rendered to 'not-an-arn'"):
        RuntimeSettings(role_arn="not-an-arn", input_bucket="in-b", output_bucket="out-b").check("p")


def test_quotas_without_a_service_quotas_client_are_the_defaults_with_the_overrides():
    config = pipeline_config({"quota_overrides": {"max_records_per_job": 20_000}})
    quotas = resolve_quotas(config, config.model.id, None)
    assert quotas.max_records_per_job == 20_000
    assert quotas.min_records_per_job == default_quotas(config.model.id).min_records_per_job


def test_a_source_row_carries_the_key_as_a_prompt_field_and_its_attempt():
    config = pipeline_config()
    row = source_row(
        {"source_key": "c-1", "text": "hello", "attempt": 2, "agent_id": "a-1", "customer_id": "u-1"}, config
    )
    assert (row.source_key, row.text, row.attempt) == ("c-1", "hello", 2)
    assert row.fields == {"agent_id": "a-1", "customer_id": "u-1", "call_id": "c-1"}


@pytest.mark.parametrize(
    ("pending_since", "overdue"),
    [
        (None, False),  # a window row, never carried over
        (NOW - dt.timedelta(days=2, hours=23), False),
        (NOW - dt.timedelta(days=3), True),
        ((NOW - dt.timedelta(days=4)).replace(tzinfo=None), True),  # naive values are UTC
        ((NOW - dt.timedelta(days=4)).strftime("%Y-%m-%d %H:%M:%S"), True),  # SQLite text
    ],
)
def test_a_carried_over_row_is_overdue_from_max_age_days(pending_since, overdue):
    assert _is_overdue({"pending_since": pending_since}, 3, NOW) is overdue


def test_prepare_counts_are_plain_data_for_xcom():
    counts = PrepareCounts(source_rows=3, rejected=1, staged=2, by_origin={"window": 3})
    assert counts.to_dict() == {
        "source_rows": 3,
        "rejected": 1,
        "staged": 2,
        "carried_over": 0,
        "on_demand": 0,
        "left_unread": 0,
        "by_origin": {"window": 3},
    }
