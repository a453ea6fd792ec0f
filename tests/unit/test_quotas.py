"""Quotas: defaults, overrides, Service Quotas lookup, job planning."""

from __future__ import annotations

import logging

import boto3
import pytest
from botocore.stub import Stubber

from bedrock_batch.errors import ConfigError, QuotaError
from bedrock_batch.quotas import (
    GB,
    BatchQuotas,
    default_quotas,
    match_display_name,
    plan_job_sizes,
    quotas_from_service,
)

DOCUMENTED = BatchQuotas(
    min_records_per_job=100,
    max_records_per_file=50_000,
    max_records_per_job=50_000,
    max_file_bytes=1 * GB,
    max_job_bytes=5 * GB,
    max_concurrent_jobs=20,
)


# -- defaults and overrides ----------------------------------------------------------------------


def test_default_quotas_are_the_documented_defaults():
    assert default_quotas("anthropic.claude-3-5-haiku-20241022-v1:0") == DOCUMENTED


def test_default_quotas_ignore_the_cross_region_prefix(monkeypatch):
    import dataclasses

    from bedrock_batch import quotas

    nova = dataclasses.replace(DOCUMENTED, min_records_per_job=50)
    monkeypatch.setattr(quotas, "DEFAULT_QUOTAS", (*quotas.DEFAULT_QUOTAS, ("amazon.nova-lite", nova)))
    assert default_quotas("us.amazon.nova-lite-v1:0") == nova
    assert default_quotas("amazon.nova-lite-v1:0") == nova
    assert default_quotas("us.amazon.nova-pro-v1:0") == DOCUMENTED
    assert default_quotas("apac.amazon.nova-lite-v1:0") == nova
    assert (
        default_quotas("arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.amazon.nova-lite-v1:0")
        == nova
    )


def test_with_overrides_replaces_only_the_named_quota():
    quotas = DOCUMENTED.with_overrides({"max_records_per_job": 10_000})
    assert quotas.max_records_per_job == 10_000
    assert quotas.max_records_per_file == DOCUMENTED.max_records_per_file


def test_with_overrides_of_nothing_is_the_same_quotas():
    assert DOCUMENTED.with_overrides({}) is DOCUMENTED


def test_override_of_unknown_quota_is_a_config_error_naming_it():
    with pytest.raises(ConfigError, match="max_records_per_fle"):
        DOCUMENTED.with_overrides({"max_records_per_fle": 10})


@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True, None])
def test_override_with_non_positive_integer_is_a_config_error_naming_it(value):
    with pytest.raises(ConfigError, match="max_file_bytes"):
        DOCUMENTED.with_overrides({"max_file_bytes": value})


def test_minimum_above_job_maximum_is_a_config_error():
    with pytest.raises(ConfigError, match="min_records_per_job"):
        DOCUMENTED.with_overrides({"min_records_per_job": 60_000})


# -- model display names -------------------------------------------------------------------------

QUOTA_DISPLAY_NAMES = [
    "Claude 3 Haiku",
    "Claude 3.5 Haiku",
    "Claude 3.5 Sonnet",
    "Claude 3.5 Sonnet v2",
    "Claude 3.7 Sonnet",
    "Claude Sonnet 4",
    "Nova Lite V1",
    "Nova Pro V1",
    "Llama 3.1 8B Instruct",
    "Llama 3.1 70B Instruct",
    "Llama 3.2 1B Instruct",
    "Mistral Small",
    "Mistral Large (24.02)",
    "OpenAI GPT OSS 120b",
    "Qwen3 235B",
    "Titan Text Embeddings V2",
]


@pytest.mark.parametrize(
    ("model_id", "display"),
    [
        ("anthropic.claude-3-5-haiku-20241022-v1:0", "Claude 3.5 Haiku"),
        ("us.anthropic.claude-3-haiku-20240307-v1:0", "Claude 3 Haiku"),
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", "Claude 3.5 Sonnet"),
        ("anthropic.claude-3-5-sonnet-20241022-v2:0", "Claude 3.5 Sonnet v2"),
        ("global.anthropic.claude-3-7-sonnet-20250219-v1:0", "Claude 3.7 Sonnet"),
        ("anthropic.claude-sonnet-4-20250514-v1:0", "Claude Sonnet 4"),
        ("amazon.nova-lite-v1:0", "Nova Lite V1"),
        ("meta.llama3-1-70b-instruct-v1:0", "Llama 3.1 70B Instruct"),
        ("meta.llama3-2-1b-instruct-v1:0", "Llama 3.2 1B Instruct"),
        ("mistral.mistral-small-2402-v1:0", "Mistral Small"),
        ("mistral.mistral-large-2402-v1:0", "Mistral Large (24.02)"),
        ("openai.gpt-oss-120b-1:0", "OpenAI GPT OSS 120b"),
        ("qwen.qwen3-235b-a22b-2507-v1:0", "Qwen3 235B"),
        ("amazon.titan-embed-text-v2:0", "Titan Text Embeddings V2"),
    ],
)
def test_model_id_matches_its_quota_display_name(model_id, display):
    assert match_display_name(model_id, QUOTA_DISPLAY_NAMES) == display


@pytest.mark.parametrize(
    ("model_id", "display"),
    [
        # eu-west-3's "3" is no version: Claude 3 Haiku's tokens must not match Claude 3.5 Haiku too.
        (
            "arn:aws:bedrock:eu-west-3:123456789012:inference-profile/eu.anthropic.claude-3-5-haiku-20241022-v1:0",
            "Claude 3.5 Haiku",
        ),
        (
            "arn:aws:bedrock:eu-west-3::foundation-model/anthropic.claude-3-haiku-20240307-v1:0",
            "Claude 3 Haiku",
        ),
        (
            "arn:aws:bedrock:us-east-1:123456789012:custom-model/meta.llama3-1-8b-instruct-v1:0:128k/a1b2c3d4e5f6",
            "Llama 3.1 8B Instruct",
        ),
    ],
)
def test_a_model_arn_matches_the_display_name_of_the_model_it_names(model_id, display):
    assert match_display_name(model_id, QUOTA_DISPLAY_NAMES) == display


def test_model_without_quota_display_name_matches_nothing():
    assert match_display_name("anthropic.claude-opus-4-1-20250805-v1:0", QUOTA_DISPLAY_NAMES) is None


# -- Service Quotas ------------------------------------------------------------------------------


def _quota(name: str, value: float) -> dict:
    return {
        "ServiceCode": "bedrock",
        "QuotaCode": "L-" + format(abs(hash(name)) % 0xFFFFFFFF, "08X"),
        "QuotaName": name,
        "Value": value,
    }


def _haiku_quotas() -> list[dict]:
    return [
        _quota("Minimum number of records per batch inference job for Claude 3.5 Haiku", 50),
        _quota("Records per batch inference job for Claude 3.5 Haiku", 100_000),
        _quota("Records per input file per batch inference job for Claude 3.5 Haiku", 20_000),
        _quota("Batch inference input file size for Claude 3.5 Haiku (in GB)", 0.5),
        _quota("Batch inference job size (in GB) for Claude 3.5 Haiku", 2),
        _quota(
            "Sum of in-progress and submitted batch inference jobs using a base model for Claude 3.5 Haiku", 7
        ),
        _quota("Records per batch inference job for Claude 3.5 Sonnet", 1),
        _quota("On-demand model inference tokens per minute for Claude 3.5 Haiku", 400_000),
    ]


@pytest.fixture
def quotas_client():
    """A real boto3 Service Quotas client whose HTTP layer is a botocore Stubber.

    Documented exception to "no mocks": these tests pin the paging and name matching against
    exact ListServiceQuotas responses; the stand-in test below covers the real HTTP path.
    """
    client = boto3.client(
        "service-quotas",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def test_quotas_from_service_reads_every_batch_quota_of_the_model_across_pages(quotas_client):
    client, stubber = quotas_client
    quotas = _haiku_quotas()
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": quotas[:3], "NextToken": "page2"},
        {"ServiceCode": "bedrock", "MaxResults": 100},
    )
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": quotas[3:]},
        {"ServiceCode": "bedrock", "MaxResults": 100, "NextToken": "page2"},
    )

    result = quotas_from_service(client, "us.anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)

    assert result == BatchQuotas(
        min_records_per_job=50,
        max_records_per_file=20_000,
        max_records_per_job=100_000,
        max_file_bytes=GB // 2,
        max_job_bytes=2 * GB,
        max_concurrent_jobs=7,
    )


def test_quotas_from_service_keeps_base_for_quotas_neither_list_reports(quotas_client):
    client, stubber = quotas_client
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": [_quota("Records per batch inference job for Claude 3.5 Haiku", 9_000)]},
    )
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": []})
    result = quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)
    assert result == DOCUMENTED.with_overrides({"max_records_per_job": 9_000})


def test_quotas_the_accounts_list_leaves_out_are_read_from_the_aws_defaults(quotas_client, caplog):
    """AWS: ListServiceQuotas leaves out a quota with no applied value, as the minimum may be."""
    client, stubber = quotas_client
    minimum = "Minimum number of records per batch inference job for Claude 3.5 Haiku"
    stubber.add_response(
        "list_service_quotas", {"Quotas": [q for q in _haiku_quotas() if q["QuotaName"] != minimum]}
    )
    stubber.add_response(
        "list_aws_default_service_quotas",
        {
            "Quotas": [
                _quota(minimum, 1_000),
                _quota("Records per batch inference job for Claude 3.5 Haiku", 50_000),
            ]
        },
        {"ServiceCode": "bedrock", "MaxResults": 100},
    )

    with caplog.at_level(logging.INFO, logger="bedrock_batch.quotas"):
        result = quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)

    assert result.min_records_per_job == 1_000
    assert result.max_records_per_job == 100_000  # the account's applied value, not the default
    assert "AWS defaults for min_records_per_job" in caplog.text


def test_quotas_from_service_reads_no_defaults_when_the_accounts_list_has_every_quota(quotas_client):
    client, stubber = quotas_client
    stubber.add_response("list_service_quotas", {"Quotas": _haiku_quotas()})
    quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)
    # the Stubber fails on any call nothing was queued for


def test_quotas_from_service_keeps_the_applied_values_when_the_defaults_are_denied(quotas_client, caplog):
    client, stubber = quotas_client
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": [_quota("Records per batch inference job for Claude 3.5 Haiku", 9_000)]},
    )
    stubber.add_client_error(
        "list_aws_default_service_quotas", service_error_code="AccessDeniedException", http_status_code=403
    )
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.quotas"):
        result = quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)
    assert result == DOCUMENTED.with_overrides({"max_records_per_job": 9_000})
    assert "Could not read the default Bedrock batch quotas" in caplog.text


def test_quotas_from_service_without_a_matching_model_warns_and_returns_base(quotas_client, caplog):
    client, stubber = quotas_client
    stubber.add_response("list_service_quotas", {"Quotas": _haiku_quotas()})
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": _haiku_quotas()})
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.quotas"):
        result = quotas_from_service(client, "amazon.nova-pro-v1:0", DOCUMENTED)
    assert result is DOCUMENTED
    assert "amazon.nova-pro-v1:0" in caplog.text


def test_quotas_from_service_on_access_denied_warns_and_returns_base(quotas_client, caplog):
    client, stubber = quotas_client
    stubber.add_client_error(
        "list_service_quotas", service_error_code="AccessDeniedException", http_status_code=403
    )
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.quotas"):
        result = quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)
    assert result is DOCUMENTED
    assert "AccessDenied" in caplog.text


def test_quotas_from_service_with_an_unusable_value_warns_and_returns_base(quotas_client, caplog):
    client, stubber = quotas_client
    stubber.add_response(
        "list_service_quotas", {"Quotas": [_quota("Records per batch inference job for Claude 3.5 Haiku", 0)]}
    )
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": []})
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.quotas"):
        result = quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", DOCUMENTED)
    assert result is DOCUMENTED
    assert "Could not read Bedrock batch quotas" in caplog.text and "using defaults" in caplog.text


# -- planning ------------------------------------------------------------------------------------

SMALL = BatchQuotas(
    min_records_per_job=10,
    max_records_per_file=40,
    max_records_per_job=100,
    max_file_bytes=10_000,
    max_job_bytes=50_000,
    max_concurrent_jobs=2,
)


@pytest.mark.parametrize(
    ("total", "sizes"),
    [
        (0, []),
        (9, []),  # min - 1: the small-batch policy decides
        (10, [10]),  # min
        (11, [11]),
        (99, [99]),
        (100, [100]),  # max
        (101, [51, 50]),  # max + 1
        (200, [100, 100]),
        (201, [67, 67, 67]),  # 2 * max + 1
        (250, [84, 83, 83]),
    ],
)
def test_plan_job_sizes_at_and_around_every_limit(total, sizes):
    assert plan_job_sizes(total, SMALL) == sizes


@pytest.mark.parametrize("total", [100, 50_000, 50_001, 100_001, 1_234_567])
def test_plan_job_sizes_with_documented_quotas_covers_every_record_within_limits(total):
    sizes = plan_job_sizes(total, DOCUMENTED)
    assert sum(sizes) == total
    assert max(sizes) - min(sizes) <= 1
    assert all(DOCUMENTED.min_records_per_job <= size <= DOCUMENTED.max_records_per_job for size in sizes)
    assert len(sizes) == -(-total // DOCUMENTED.max_records_per_job)


def test_plan_job_sizes_without_any_valid_split_is_a_quota_error():
    tight = SMALL.with_overrides({"min_records_per_job": 60})
    with pytest.raises(QuotaError, match="101 records"):
        plan_job_sizes(101, tight)


def test_plan_job_sizes_of_negative_total_is_a_quota_error():
    with pytest.raises(QuotaError):
        plan_job_sizes(-1, SMALL)
