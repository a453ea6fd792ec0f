"""Bedrock batch inference quotas: documented defaults, the account's live values, and job planning.

Imported at DAG-parse time, so nothing heavy is imported at module level: the Service Quotas
client is passed in by the caller.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bedrock_batch.errors import ConfigError, QuotaError
from bedrock_batch.models import base_model_id

log = logging.getLogger(__name__)

GB = 1_000_000_000
"""Bytes in one GB of a quota value. Decimal, the smaller reading of "GB", so a file never overshoots."""


@dataclass(frozen=True)
class BatchQuotas:
    """The limits one batch inference job must respect (per model, per region)."""

    min_records_per_job: int = 100
    max_records_per_file: int = 50_000
    max_records_per_job: int = 50_000
    max_file_bytes: int = 1 * GB
    max_job_bytes: int = 5 * GB
    max_concurrent_jobs: int = 20

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check_positive(field.name, getattr(self, field.name))
        if self.min_records_per_job > self.max_records_per_job:
            raise ConfigError(
                f"quota min_records_per_job ({self.min_records_per_job}) exceeds "
                f"max_records_per_job ({self.max_records_per_job})"
            )

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> BatchQuotas:
        """Return a copy with the settings of a pipeline config applied (e.g. a raised job quota)."""
        if not overrides:
            return self
        names = {field.name for field in dataclasses.fields(self)}
        for key, value in overrides.items():
            if key not in names:
                raise ConfigError(f"unknown quota override {key!r}; known: {', '.join(sorted(names))}")
            _check_positive(key, value)
        return dataclasses.replace(self, **dict(overrides))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _check_positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"quota {name!r} must be a positive integer, got {value!r}")


_DEFAULT = BatchQuotas()

DEFAULT_QUOTAS: tuple[tuple[str, BatchQuotas], ...] = (("", _DEFAULT),)
"""Documented defaults (AWS general reference, mid-2025), as (model id prefix, quotas) rows.

The longest matching prefix of the model id (region prefix such as ``us.`` removed) wins, so a
per-model exception is one more row, e.g.
``("amazon.nova-micro", dataclasses.replace(_DEFAULT, min_records_per_job=50))``.
Every text model this project targets has the common defaults today; the table keeps the
mechanism so a documented exception is a one-line change.
"""


def default_quotas(model_id: str) -> BatchQuotas:
    """The documented default quotas of a model: what to assume before asking Service Quotas."""
    base_id = base_model_id(model_id)
    best_prefix, best = "", _DEFAULT
    for prefix, quotas in DEFAULT_QUOTAS:
        if base_id.startswith(prefix) and len(prefix) >= len(best_prefix):
            best_prefix, best = prefix, quotas
    return best


# -- Service Quotas -----------------------------------------------------------------------------

_GB_SUFFIX = r"(?: \(in GB\))?"
_QUOTA_NAME_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("min_records_per_job", re.compile(r"^Minimum number of records per batch inference job for (.+)$")),
    ("max_records_per_file", re.compile(r"^Records per input file per batch inference job for (.+)$")),
    ("max_records_per_job", re.compile(r"^Records per batch inference job for (.+)$")),
    # Both spellings occur: "... size (in GB) for X" and "... size for X (in GB)".
    ("max_file_bytes", re.compile(rf"^Batch inference input file size{_GB_SUFFIX} for (.+?){_GB_SUFFIX}$")),
    ("max_job_bytes", re.compile(rf"^Batch inference job size{_GB_SUFFIX} for (.+?){_GB_SUFFIX}$")),
    (
        "max_concurrent_jobs",
        re.compile(r"^Sum of in-progress and submitted batch inference jobs using a base model for (.+)$"),
    ),
)
_BYTE_FIELDS = frozenset({"max_file_bytes", "max_job_bytes"})

_IGNORED_TOKENS = frozenset({"v1", "g1", ""})
_TOKEN_ALIASES = {"embeddings": "embed", "embedding": "embed"}


def _split_word(word: str) -> list[str]:
    # "llama3" -> "llama", "3"; keeps "v2", "70b", "a22b" whole.
    match = re.fullmatch(r"([a-z]{3,})(\d+)", word)
    return [match.group(1), match.group(2)] if match else [word]


def _normalise(tokens: list[str]) -> frozenset[str]:
    out = set()
    for token in tokens:
        token = _TOKEN_ALIASES.get(token, token)
        if token not in _IGNORED_TOKENS:
            out.add(token)
    return frozenset(out)


def display_name_tokens(name: str) -> frozenset[str]:
    """Tokens of a quota's model display name: "Claude 3.5 Haiku" -> {claude, 35, haiku}."""
    tokens: list[str] = []
    for word in re.split(r"[\s\-_/]+", name.lower()):
        tokens.extend(_split_word(re.sub(r"[^a-z0-9]", "", word)))
    return _normalise(tokens)


def model_id_tokens(model_id: str) -> frozenset[str]:
    """Tokens of a model id: "anthropic.claude-3-5-haiku-20241022-v1:0" -> {anthropic, claude, 35, haiku}.

    Runs of one- or two-digit parts are version numbers ("3-5" -> "35", as "3.5" in display names);
    eight-digit dates and what follows the first colon (the ":0" revision, a custom model's
    ":128k" context) are dropped. An ARN counts by the model it names (:func:`base_model_id`): its
    region, account and resource type would otherwise be tokens too ("3" of ``eu-west-3``).
    """
    base = base_model_id(model_id).lower().split(":", 1)[0]
    words: list[str] = []
    for word in re.split(r"[.\-_:/]+", base):
        words.extend(_split_word(word))
    tokens: list[str] = []
    digits: list[str] = []
    for word in [*words, ""]:
        if re.fullmatch(r"\d{1,2}", word):
            digits.append(word)
            continue
        if digits:
            tokens.append("".join(digits))
            digits = []
        if not re.fullmatch(r"\d{8}", word):
            tokens.append(word)
    return _normalise(tokens)


def match_display_name(model_id: str, display_names: list[str] | set[str]) -> str | None:
    """The display name whose tokens all occur in the model id, the most specific one; None if unclear."""
    wanted = model_id_tokens(model_id)
    scored = sorted(
        ((len(tokens), name) for name in display_names if (tokens := display_name_tokens(name)) <= wanted),
        reverse=True,
    )
    if not scored or (len(scored) > 1 and scored[0][0] == scored[1][0]):
        return None
    return scored[0][1]


def _iter_bedrock_quotas(client: Any, max_pages: int, *, defaults: bool = False) -> list[dict[str, Any]]:
    """Every ``bedrock`` quota ListServiceQuotas (or, ``defaults``, ListAWSDefaultServiceQuotas) pages
    through."""
    quotas: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"ServiceCode": "bedrock", "MaxResults": 100}
    for _ in range(max_pages):
        if defaults:
            page = client.list_aws_default_service_quotas(**kwargs)
        else:
            page = client.list_service_quotas(**kwargs)
        quotas.extend(page.get("Quotas", []))
        token = page.get("NextToken")
        if not token:
            return quotas
        kwargs["NextToken"] = token
    raise QuotaError(f"Service Quotas returned more than {max_pages} pages of bedrock quotas")


def _model_quotas(quotas: list[dict[str, Any]], model_id: str) -> dict[str, float] | None:
    """The batch quotas among ``quotas`` of the model ``model_id`` names, by BatchQuotas field;
    None when no model named in them matches."""
    by_field: dict[str, dict[str, float]] = {}
    for quota in quotas:
        name = quota.get("QuotaName") or ""
        value = quota.get("Value")
        if value is None:
            continue
        for field, pattern in _QUOTA_NAME_PATTERNS:
            match = pattern.match(name)
            if match:
                by_field.setdefault(field, {})[match.group(1).strip()] = float(value)
                break
    display = match_display_name(model_id, {name for values in by_field.values() for name in values})
    if display is None:
        return None
    return {field: values[display] for field, values in by_field.items() if display in values}


def quotas_from_service(
    client: Any, model_id: str, base: BatchQuotas, *, max_pages: int = 100
) -> BatchQuotas:
    """The account's live batch quotas for a model, read from Service Quotas.

    ``client`` is a boto3 ``service-quotas`` client. ListServiceQuotas gives the account's applied
    values, but AWS leaves out a quota that has none, as a quota no account may raise (the minimum
    records per job, the size limits) may not: those are read from ListAWSDefaultServiceQuotas, so a
    model whose minimum is above the documented 100 does not get jobs Bedrock fails in validation.
    Quotas neither reports keep their value from ``base``. Any failure (no permission, no network,
    no such model) logs a warning and keeps ``base`` for what it could not read: a lookup must never
    stop a run that the defaults can serve.
    """

    def unread(err: Exception) -> BatchQuotas:
        log.warning(
            "Could not read Bedrock batch quotas for %s from Service Quotas (%s); using defaults",
            model_id,
            err,
        )
        return base

    try:
        applied = _model_quotas(_iter_bedrock_quotas(client, max_pages), model_id)
    except Exception as err:
        return unread(err)
    values = dict(applied or {})
    defaults: dict[str, float] = {}
    if len(values) < len(_QUOTA_NAME_PATTERNS):
        try:
            defaults = _model_quotas(_iter_bedrock_quotas(client, max_pages, defaults=True), model_id) or {}
        except Exception as err:
            log.warning(
                "Could not read the default Bedrock batch quotas for %s (%s): quotas the account's list "
                "leaves out keep their documented values",
                model_id,
                err,
            )
    defaulted = sorted(defaults.keys() - values.keys())
    values.update({field: defaults[field] for field in defaulted})
    if not values:
        log.warning("No Service Quotas batch quotas match model %s; using defaults", model_id)
        return base
    try:
        result = base.with_overrides(
            {
                field: int(value * GB) if field in _BYTE_FIELDS else int(value)
                for field, value in values.items()
            }
        )
    except Exception as err:
        return unread(err)
    log.info(
        "Batch quotas for %s from Service Quotas%s: %s",
        model_id,
        f" (AWS defaults for {', '.join(defaulted)})" if defaulted else "",
        result.to_dict(),
    )
    return result


# -- planning ------------------------------------------------------------------------------------


def balanced_sizes(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` sizes that differ by at most one, larger first."""
    if parts <= 0:
        return []
    base, extra = divmod(total, parts)
    return [base + 1] * extra + [base] * (parts - extra)


def plan_job_sizes(total_records: int, quotas: BatchQuotas) -> list[int]:
    """Record counts of the jobs for ``total_records``: the fewest jobs, balanced.

    Fewer records than one job's minimum give ``[]``: the caller's small-batch policy decides
    (carry over, or run on demand). Balancing with the fewest jobs is the best possible split:
    if it leaves a job under the minimum, no split exists and that is a QuotaError.
    Byte limits depend on the records' sizes and are enforced by the stager while streaming.
    """
    if total_records < 0:
        raise QuotaError(f"total_records must not be negative, got {total_records}")
    if total_records < quotas.min_records_per_job:
        return []
    jobs = math.ceil(total_records / quotas.max_records_per_job)
    sizes = balanced_sizes(total_records, jobs)
    if sizes[-1] < quotas.min_records_per_job:
        raise QuotaError(
            f"{total_records} records cannot be split into jobs of "
            f"{quotas.min_records_per_job}..{quotas.max_records_per_job} records "
            "(quotas min_records_per_job / max_records_per_job)"
        )
    return sizes
