"""Batch inference quotas the stand-in enforces, and the Service Quotas API that reports them."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

GB = 1_000_000_000
"""Bytes per GB in the quota values (decimal, as the quota names say "in GB")."""

MODEL_NAMES: dict[str, str] = {
    "anthropic.claude-3-haiku-20240307-v1:0": "Claude 3 Haiku",
    "anthropic.claude-3-5-sonnet-20240620-v1:0": "Claude 3.5 Sonnet",
    "anthropic.claude-3-5-haiku-20241022-v1:0": "Claude 3.5 Haiku",
    "amazon.nova-micro-v1:0": "Nova Micro",
    "amazon.nova-lite-v1:0": "Nova Lite",
    "amazon.nova-pro-v1:0": "Nova Pro",
    "meta.llama3-1-8b-instruct-v1:0": "Llama 3.1 8B Instruct",
    "meta.llama3-1-70b-instruct-v1:0": "Llama 3.1 70B Instruct",
    "mistral.mistral-large-2402-v1:0": "Mistral Large (24.02)",
    "amazon.titan-text-express-v1": "Titan Text G1 - Express",
}
"""Models whose quotas ListServiceQuotas reports, with the display names used in quota names."""


@dataclass
class Quotas:
    """The per-model batch quotas (one set for every model), field names as in bedrock_batch.quotas,
    and the smaller limit on jobs per custom model."""

    min_records_per_job: int = 100
    max_records_per_file: int = 50_000
    max_records_per_job: int = 50_000
    max_file_bytes: int = 1 * GB
    max_job_bytes: int = 5 * GB
    max_concurrent_jobs: int = 20
    max_concurrent_custom_jobs: int = 3
    """Submitted and in-progress jobs per custom model (BEDROCK_FACTS: 3); not in Service Quotas here."""

    def update(self, values: dict[str, Any]) -> None:
        """Set the named fields; an unknown name is a ValueError naming it."""
        names = {f.name for f in dataclasses.fields(self)}
        for key, value in values.items():
            if key not in names:
                raise ValueError(f"unknown quota {key!r}; known: {sorted(names)}")
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"quota {key!r} must be a non-negative integer, got {value!r}")
            setattr(self, key, value)

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _quota_code(name: str) -> str:
    return "L-" + hashlib.blake2b(name.encode(), digest_size=4).hexdigest().upper()


_QUOTA_NAMES: tuple[tuple[str, str, float], ...] = (
    ("min_records_per_job", "Minimum number of records per batch inference job for {}", 1),
    ("max_records_per_job", "Records per batch inference job for {}", 1),
    ("max_records_per_file", "Records per input file per batch inference job for {}", 1),
    ("max_file_bytes", "Batch inference input file size (in GB) for {}", GB),
    ("max_job_bytes", "Batch inference job size (in GB) for {}", GB),
    (
        "max_concurrent_jobs",
        "Sum of in-progress and submitted batch inference jobs using a base model for {}",
        1,
    ),
)
"""Each Quotas field's quota name (a model's display name goes in the braces) and unit divisor."""
ADJUSTABLE = frozenset({"max_records_per_job", "max_records_per_file", "max_concurrent_jobs"})
"""The quotas an account may ask to raise: the only ones with an applied value."""


def service_quotas(quotas: Quotas, region: str, *, defaults: bool = False) -> list[dict[str, Any]]:
    """
    The ServiceQuota structures of every batch quota of every known model, as the account has them
    (``quotas``), or as ListAWSDefaultServiceQuotas reports them (``defaults``).

    An account has applied values only for the quotas it may ask to raise (:data:`ADJUSTABLE`); the
    others keep their default, and AWS says ListServiceQuotas leaves out a quota with no applied
    value. So :func:`applied_quotas` lists only the adjustable ones, and the defaults list gives the
    others the values this stand-in enforces (a quota no one can adjust is its default) and the
    adjustable ones the service's documented defaults (this module's built-in values, whatever the
    command line or ``/_local/quotas`` set).
    """
    documented = Quotas()
    result = []
    for display in MODEL_NAMES.values():
        for field, name_format, divisor in _QUOTA_NAMES:
            source = documented if defaults and field in ADJUSTABLE else quotas
            name = name_format.format(display)
            code = _quota_code(name)
            result.append(
                {
                    "ServiceCode": "bedrock",
                    "ServiceName": "Amazon Bedrock",
                    "QuotaArn": f"arn:aws:servicequotas:{region}:123456789012:bedrock/{code}",
                    "QuotaCode": code,
                    "QuotaName": name,
                    "Value": float(getattr(source, field) / divisor),
                    "Unit": "None",
                    "Adjustable": field in ADJUSTABLE,
                    "GlobalQuota": False,
                    "QuotaAppliedAtLevel": "ACCOUNT",
                }
            )
    return result


def applied_quotas(quotas: Quotas, region: str) -> list[dict[str, Any]]:
    """What ListServiceQuotas(ServiceCode='bedrock') returns: the quotas with an applied value."""
    return [quota for quota in service_quotas(quotas, region) if quota["Adjustable"]]
