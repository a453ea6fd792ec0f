"""Pipeline configs: one YAML file in include/pipelines/ declares one nightly DAG.

A config is validated when the DAG file is parsed, so a mistake shows up as a DAG import error that
names the file and the field. Values that differ per environment (role ARN, buckets, account) are
Jinja templates such as ``{{ var.value.bedrock_batch_role_arn }}``: they are rendered by the task that
uses them and checked then (``check_runtime_values``), never read from code.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bedrock_batch.alerts import build_notifiers
from bedrock_batch.errors import ConfigError
from bedrock_batch.job_tags import MAX_JOB_TAGS, RESERVED_TAG_PREFIX, SUBMIT_TAGS

if TYPE_CHECKING:
    from bedrock_batch.table_names import WarehouseTables

INCLUDE_DIR = Path(__file__).resolve().parents[2] / "include"
#: Where pipeline configs live; BEDROCK_BATCH_PIPELINES_DIR points elsewhere (e.g. a deployment's own repo).
PIPELINES_DIR = Path(os.environ.get("BEDROCK_BATCH_PIPELINES_DIR") or INCLUDE_DIR / "pipelines")

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
ROLE_ARN = re.compile(r"^arn:aws(-[a-z]+)*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
BUCKET_NAME = re.compile(r"^(?!xn--)(?!.*\.\.)[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
ACCOUNT_ID = re.compile(r"^\d{12}$")
KMS_KEY = re.compile(r"^(arn:aws(-[a-z]+)*:kms:[a-z0-9-]+:\d{12}:(key|alias)/.+|alias/.+|[0-9a-f-]{36})$")
PREFIX = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")
PIPELINE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
TAG_KEY = re.compile(r"^[a-zA-Z0-9\s._:/=+@-]{1,128}$")
TAG_VALUE = re.compile(r"^[a-zA-Z0-9\s._:/=+@-]{0,256}$")


def is_template(value: str) -> bool:
    """A value rendered by Airflow at run time (checked after rendering, not at parse time)."""
    return "{{" in value or "{%" in value


def _identifier(value: str, what: str) -> str:
    if not IDENTIFIER.match(value):
        raise ValueError(f"{what} {value!r} is not a plain SQL identifier ([A-Za-z_][A-Za-z0-9_]*)")
    return value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceConfig(_Strict):
    """Where the text comes from: one warehouse table, filtered by the run's window."""

    conn_id: str = "warehouse_default"
    table: str
    key_column: str
    text_column: str
    timestamp_column: str
    extra_columns: tuple[str, ...] = ()

    @field_validator("table", "key_column", "text_column", "timestamp_column")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        return _identifier(value, "name")

    @field_validator("extra_columns")
    @classmethod
    def _plain_identifiers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for column in value:
            _identifier(column, "column")
        return value

    @property
    def prompt_columns(self) -> tuple[str, ...]:
        """Columns a prompt template may name: the key, the text and the extra columns."""
        return (self.key_column, self.text_column, *self.extra_columns)


class ModelConfig(_Strict):
    """Which model summarizes, and how its input is built."""

    id: str = Field(min_length=1, max_length=2048)
    invocation_type: Literal["InvokeModel", "Converse"] = "InvokeModel"
    params: dict[str, Any] = Field(default_factory=dict)
    on_too_long: Literal["reject", "truncate"] = "reject"
    context_tokens: int | None = Field(default=None, ge=1_000, le=10_000_000)
    """The model's context window in tokens, when it differs from what ``models`` knows (records
    whose estimated input plus ``max_tokens`` exceed it are rejected or truncated)."""


class WarehouseConfig(_Strict):
    """Tables the results, the errors and the carried-over keys go to."""

    output_table: str
    error_table: str
    pending_table: str

    @field_validator("output_table", "error_table", "pending_table")
    @classmethod
    def _plain_identifier(cls, value: str) -> str:
        return _identifier(value, "table")

    @model_validator(mode="after")
    def _tables_fit_together(self) -> WarehouseConfig:
        """The warehouse's own checks (distinct names; the window claims table named after the
        pending table fits in 63 characters), made when the DAG is imported, not at the first run."""
        try:
            self.tables()
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    def tables(self) -> WarehouseTables:
        from bedrock_batch.table_names import WarehouseTables

        return WarehouseTables(
            output_table=self.output_table, error_table=self.error_table, pending_table=self.pending_table
        )


class AwsConfig(_Strict):
    """The Airflow AWS connection and the role Bedrock assumes to read and write S3."""

    conn_id: str = "aws_default"
    region: str | None = None
    role_arn: str

    @field_validator("role_arn")
    @classmethod
    def _role_arn(cls, value: str) -> str:
        if not is_template(value) and not ROLE_ARN.match(value):
            raise ValueError(f"{value!r} is not an IAM role ARN (arn:aws:iam::<12 digits>:role/<name>)")
        return value


DEFAULT_UPLOAD_THREADS = 2
MAX_UPLOAD_THREADS = 8
"""With the stager's two finishing threads, within botocore's default pool of 10 connections."""


class StagingConfig(_Strict):
    """S3 locations of the batch input and output, and how they are protected."""

    input_bucket: str
    input_prefix: str = "bedrock-batch/input"
    output_bucket: str
    output_prefix: str = "bedrock-batch/output"
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None
    upload_threads: int = Field(default=DEFAULT_UPLOAD_THREADS, ge=1, le=MAX_UPLOAD_THREADS)
    """Parts of the input sent to S3 at once while records are built. S3 scales with connections; two
    keep up with the local stand-in here (four measured the same)."""

    @field_validator("input_bucket", "output_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not is_template(value) and not BUCKET_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid S3 bucket name")
        return value

    @field_validator("input_prefix", "output_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value:  # every S3 path and lifecycle rule is built below a folder
            raise ValueError("name a folder (e.g. bedrock-batch/input); the bucket's root is not supported")
        if not PREFIX.match(value):
            raise ValueError(f"{value!r} has characters that are unsafe in an S3 key prefix")
        return value

    @field_validator("kms_key_id")
    @classmethod
    def _kms(cls, value: str | None) -> str | None:
        if value and not is_template(value) and not KMS_KEY.match(value):
            raise ValueError(f"{value!r} is not a KMS key id, key ARN or alias")
        return value or None

    @field_validator("expected_bucket_owner")
    @classmethod
    def _owner(cls, value: str | None) -> str | None:
        if value and not is_template(value) and not ACCOUNT_ID.match(value):
            raise ValueError(f"{value!r} is not a 12-digit AWS account id")
        return value or None


class JobsConfig(_Strict):
    """How the batch jobs are submitted."""

    timeout_hours: int = Field(default=24, ge=24, le=168)
    tags: dict[str, str] = Field(default_factory=dict)
    pool: str = "bedrock_batch_jobs"
    quota_overrides: dict[str, int] = Field(default_factory=dict)
    read_live_quotas: bool = True
    fail_on_partial: bool = False
    stop_on_kill: bool = True
    poll_interval_seconds: int = Field(default=60, ge=1, le=3600)
    max_poll_interval_seconds: int = Field(default=600, ge=1, le=3600)
    max_active_runs: int = Field(default=4, ge=1, le=64)
    quota_retry_minutes: int = Field(default=10, ge=1, le=240)
    """How long a submit refused for Bedrock's jobs-in-flight quota waits (slot free) before trying again."""
    quota_max_wait_hours: int = Field(default=24, ge=1, le=168)
    """How long it keeps trying before it fails, naming the job."""

    @field_validator("quota_overrides")
    @classmethod
    def _quota_overrides(cls, value: dict[str, int]) -> dict[str, int]:
        import dataclasses

        from bedrock_batch.quotas import BatchQuotas

        names = {field.name for field in dataclasses.fields(BatchQuotas)}
        unknown = sorted(set(value) - names)
        if unknown:
            known = ", ".join(sorted(names))
            raise ValueError(f"unknown quota {', '.join(map(repr, unknown))}; known: {known}")
        bad = {key: number for key, number in value.items() if number <= 0}
        if bad:
            raise ValueError(f"quota overrides must be positive, got {bad}")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        # Caught here, not by a submit after a night's input is staged.
        if len(value) > MAX_JOB_TAGS - SUBMIT_TAGS:
            raise ValueError(
                f"{len(value)} tags: Bedrock takes at most {MAX_JOB_TAGS} per job, and the submit task "
                f"adds {SUBMIT_TAGS} of its own (the DAG run and the prompt version), so at most "
                f"{MAX_JOB_TAGS - SUBMIT_TAGS}"
            )
        for key, tag_value in value.items():
            if not TAG_KEY.match(key) or key.startswith("aws:"):
                raise ValueError(f"tag key {key!r} is not allowed by Bedrock")
            if key.startswith(RESERVED_TAG_PREFIX):
                raise ValueError(
                    f"tag key {key!r}: keys starting {RESERVED_TAG_PREFIX!r} are the submit task's own "
                    "(they tie a job to its DAG run)"
                )
            if not is_template(str(tag_value)) and not TAG_VALUE.match(str(tag_value)):
                raise ValueError(
                    f"tag {key!r}: value {tag_value!r} is not allowed by Bedrock (up to 256 letters, digits, "
                    "spaces and _ . : / = + - @)"
                )
        return value


class SmallBatchConfig(_Strict):
    """What happens when a run has fewer records than a batch job's minimum."""

    policy: Literal["carry_over", "on_demand", "fail"] = "carry_over"
    max_age_days: int = Field(default=3, ge=0, le=60)
    on_demand_concurrency: int = Field(default=4, ge=1, le=64)
    on_demand_model_id: str | None = Field(default=None, min_length=1, max_length=2048)
    """The model on-demand calls go to, when not the batch model: required for a custom model's ARN,
    which bedrock-runtime does not take (name its custom model deployment's ARN). The requests are
    built for ``model.id``'s family."""


class NotifierConfig(_Strict):
    """One Airflow notifier: its class's dotted path and the keyword arguments it is made with."""

    notifier: str = Field(min_length=3)
    kwargs: dict[str, Any] = Field(default_factory=dict)


class AlertsConfig(_Strict):
    """Who hears of a failed run: notifiers it calls once, from its report task (alerts.py says why)."""

    on_failure: tuple[NotifierConfig, ...] = ()


class PipelineConfig(_Strict):
    """One pipeline: source, prompt, model, S3, jobs and the tables it writes."""

    name: str
    description: str
    owner: str = "data-platform"
    tags: tuple[str, ...] = ()
    schedule: str = "@daily"
    timezone: str = "UTC"
    start_date: str = "2026-01-01"
    catchup: bool = False
    """Whether the scheduler creates the runs of intervals missed while the DAG was paused (or off).
    Off by default, as in Airflow 3: on, a new DAG also runs every day since ``start_date``."""
    prompt: str
    source: SourceConfig
    model: ModelConfig
    warehouse: WarehouseConfig
    aws: AwsConfig
    staging: StagingConfig
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    small_batch: SmallBatchConfig = Field(default_factory=SmallBatchConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    max_attempts: int = Field(default=3, ge=1, le=20)
    late_rows_check_days: int = Field(default=3, ge=0, le=31)
    """Days before a scheduled run's window in which its report counts rows no run has read (rows that
    arrived after their day's run, days with no run); 0 turns the check off."""
    read_chunk_rows: int = Field(default=5000, ge=1, le=1_000_000)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not PIPELINE_NAME.match(value):
            raise ValueError(f"{value!r} must be lower case letters, digits and _ (it becomes the DAG id)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        import pendulum

        try:
            pendulum.timezone(value)
        except Exception as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        from airflow.timetables.interval import CronDataIntervalTimetable

        try:
            CronDataIntervalTimetable(value, "UTC").validate()
        except Exception as exc:
            raise ValueError(f"{value!r} is not a cron expression or preset Airflow accepts ({exc})") from exc
        return value

    @field_validator("start_date")
    @classmethod
    def _start_date(cls, value: str) -> str:
        import datetime as dt

        try:
            dt.date.fromisoformat(str(value))
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a YYYY-MM-DD date") from exc
        return str(value)

    @model_validator(mode="after")
    def _distinct_tables(self) -> PipelineConfig:
        tables = (self.warehouse.output_table, self.warehouse.error_table, self.warehouse.pending_table)
        if len(set(tables)) != 3 or self.source.table in tables:
            raise ValueError(
                "warehouse: output_table, error_table, pending_table and source.table must differ"
            )
        return self

    @property
    def prompt_path(self) -> Path:
        return INCLUDE_DIR / self.prompt


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return "; ".join(lines)


def load_pipeline(path: Path | str) -> PipelineConfig:
    """Read and check one pipeline file; every problem is reported with the file and the field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read pipeline config: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a pipeline config must be a mapping of settings")
    try:
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from None
    if config.name != path.stem:
        raise ConfigError(f"{path}: name: {config.name!r} must match the file name {path.stem!r}")
    _check_model_and_prompt(config, path)
    try:
        build_notifiers(config.alerts.on_failure)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return config


def on_demand_model_id(config: PipelineConfig, model_id: str) -> str:
    """
    The model id a run whose batch model is ``model_id`` calls on demand: ``small_batch.on_demand_model_id``
    for the configured model, else ``model_id`` itself (a run's ``model_id`` param calls its own model).

    A custom model's ARN runs in batch but not through bedrock-runtime (on demand it needs a custom
    model deployment), so calling one is a ConfigError, unless ``small_batch.policy`` is ``fail``
    (which never calls on demand). Under InvokeModel a setting that names its family must name
    ``model_id``'s: the records were built for it.
    """
    from bedrock_batch.models import family_for, is_custom_model, opaque_model_kind, same_request_body

    chosen = config.small_batch.on_demand_model_id if model_id == config.model.id else None
    called = chosen or model_id
    if is_custom_model(called) and config.small_batch.policy != "fail":
        fix = (
            "set small_batch.on_demand_model_id to its custom model deployment's ARN, or "
            if model_id == config.model.id
            else "make it model.id in the config with small_batch.on_demand_model_id, or set "
        )
        raise ConfigError(
            f"model {called!r} is a custom model, which bedrock-runtime does not take on demand: {fix}"
            "small_batch.policy to 'fail' (short batches then fail the run instead of going on demand)"
        )
    if chosen and config.model.invocation_type == "InvokeModel" and opaque_model_kind(chosen) is None:
        wanted, family = family_for(chosen), family_for(model_id)
        if not same_request_body(wanted, family):
            raise ConfigError(
                f"{chosen!r} is of model family {wanted.name!r}, not {family.name!r} as {model_id!r}: "
                "the records are built for that family's InvokeModel request body"
            )
    return called


def _check_model_and_prompt(config: PipelineConfig, path: Path) -> None:
    from bedrock_batch.models import family_for, opaque_model_kind
    from bedrock_batch.prompts import load_prompt

    try:
        family = family_for(
            config.model.id, config.model.invocation_type, context_tokens=config.model.context_tokens
        )
    except ConfigError as exc:
        raise ConfigError(f"{path}: model.id: {exc}") from None
    if config.model.context_tokens is None and (opaque := opaque_model_kind(config.model.id)):
        raise ConfigError(
            f"{path}: model.context_tokens: model.id {config.model.id!r} is {opaque}, whose id does not say "
            "which model runs behind it: set its context window in tokens"
        )
    try:
        family.validate_params(config.model.params)
    except ConfigError as exc:
        raise ConfigError(f"{path}: model.params: {exc}") from None
    if family.input_budget(config.model.params) < 1:
        raise ConfigError(
            f"{path}: model.params: max_tokens {family.max_tokens(config.model.params)} leaves no room "
            f"for the prompt in {config.model.id}'s context of {family.context_tokens} tokens"
        )
    try:
        on_demand_model_id(config, config.model.id)
    except ConfigError as exc:
        raise ConfigError(f"{path}: small_batch.on_demand_model_id: {exc}") from None
    if not config.prompt_path.is_file():
        raise ConfigError(f"{path}: prompt: no template file at {config.prompt_path}")
    try:
        template = load_prompt(config.prompt_path)
        template.check_fields(config.source.prompt_columns, source=str(config.prompt_path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: prompt: {exc}") from None


def discover_pipelines(directory: Path | None = None) -> list[Path]:
    """Every pipeline file (in ``directory``, by default ``PIPELINES_DIR``), in a stable order."""
    return sorted(p for p in (directory or PIPELINES_DIR).glob("*.yaml") if not p.name.startswith("_"))


def check_runtime_values(values: dict[str, str | None], *, pipeline: str) -> None:
    """Check environment values after Airflow rendered them, naming the setting at fault."""
    checks = {
        "aws.role_arn": ROLE_ARN,
        "staging.input_bucket": BUCKET_NAME,
        "staging.output_bucket": BUCKET_NAME,
        "staging.kms_key_id": KMS_KEY,
        "staging.expected_bucket_owner": ACCOUNT_ID,
    }
    for setting, pattern in checks.items():
        value = values.get(setting)
        if setting in {"aws.role_arn", "staging.input_bucket", "staging.output_bucket"} and not value:
            raise ConfigError(
                f"pipeline {pipeline}: {setting} rendered empty: set the Airflow Variable it names"
            )
        if value and not pattern.match(value):
            raise ConfigError(f"pipeline {pipeline}: {setting} rendered to {value!r}, which is not valid")
