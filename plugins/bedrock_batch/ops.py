"""Operations for the on-call engineer: list, stop, reconcile orphans; list and release window claims.

The ``bedrock_batch_ops`` DAG and the batch-jobs page call these; they take a hook (and, for
reconcile, plain callables) so they run and test without an Airflow task around them.

An *orphan* is a job tagged by this project (``job_tags``) that no DAG run tracks: the run named by
its tags does not exist, or it has finished without recording the job in its submit XCom (e.g. a
submit whose create call raised after Bedrock had accepted it, then the run was marked done).
Reconcile reports orphans, stops them, or adopts them: loads their output into the warehouse with
``collect_job`` as the run that submitted them would have, under that run's id.

A *window claim* is a pipeline run's hold on the days it summarizes (``Warehouse.claim_window``);
listing shows each holder's state in Airflow, and releasing one lets another run take those days
when the holder is gone in a way Airflow cannot tell (a run deleted, or from another deployment).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from bedrock_batch.errors import ConfigError
from bedrock_batch.job_tags import RunRef, prompt_version_of, run_ref
from bedrock_batch.s3paths import job_input_uri, pipeline_input_root, staged_under

if TYPE_CHECKING:
    from bedrock_batch.config import PipelineConfig
    from bedrock_batch.hooks import BedrockBatchHook
    from bedrock_batch.staging import StagedJob
    from bedrock_batch.warehouse import Warehouse

log = logging.getLogger(__name__)

#: Every status ListModelInvocationJobs filters on, in life-cycle order.
JOB_STATUSES = (
    "Submitted",
    "Validating",
    "Scheduled",
    "InProgress",
    "Stopping",
    "Completed",
    "PartiallyCompleted",
    "Failed",
    "Stopped",
    "Expired",
)
ANY_STATUS = "any"
SORT_ORDERS = ("Descending", "Ascending")
RECONCILE_MODES = ("report", "adopt", "stop")
MAX_RESULTS = 1000
"""Upper bound of one listing: ops answers questions about recent jobs, not the whole history."""

_MESSAGE_CHARS = 200
_TOKEN_SUFFIXED = re.compile(r"-[0-9a-f]{8}")
"""What ``operators.bedrock_job_name`` appends to a planned job name."""
_NAME_FILTER = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9+\-.]){0,63}")
"""``nameContains`` of ListModelInvocationJobs, as the service model gives it."""

Tracker = Callable[[RunRef, str], bool]
"""``(run named by the job's tags, job ARN) -> whether a DAG run tracks the job``."""


# -- list -----------------------------------------------------------------------------------------


def parse_time(value: datetime | str | None, setting: str) -> datetime | None:
    """An optional ISO 8601 timestamp (a date alone means its midnight, UTC when no offset is given)."""
    from datetime import UTC

    if value is None or value == "":
        return None
    if not isinstance(value, datetime):
        try:
            value = datetime.fromisoformat(str(value).strip())
        except ValueError as error:
            raise ConfigError(
                f"{setting} must be an ISO 8601 date or timestamp such as 2026-01-31T00:00:00Z, got {value!r}"
            ) from error
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def check_status(status: str | None) -> str | None:
    """A status filter: one of ``JOB_STATUSES``; None or ``any`` for no filter."""
    if status in (None, "", ANY_STATUS):
        return None
    if status not in JOB_STATUSES:
        raise ConfigError(
            f"status must be one of {', '.join(JOB_STATUSES)} or {ANY_STATUS!r}, got {status!r}"
        )
    return status


def check_name_contains(value: str | None) -> str | None:
    """A job-name filter as ListModelInvocationJobs takes it (``_NAME_FILTER``); None for no filter."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if not _NAME_FILTER.fullmatch(value) or len(value) > 63:
        hint = " (job names use '-' where DAG ids use '_')" if "_" in value else ""
        raise ConfigError(
            f"name_contains must be 1-63 letters, digits, '-', '+' or '.', starting with a letter or "
            f"digit, got {value!r}{hint}"
        )
    return value


def job_row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """A job as a small JSON-friendly dict (XCom, the UI): no input or output payloads."""
    from bedrock_batch.hooks import job_progress

    progress = job_progress(summary)
    total, processed = progress["total_records"], progress["processed_records"]
    message = summary.get("message")
    return {
        "job_arn": summary["jobArn"],
        "job_name": summary.get("jobName"),
        "status": summary.get("status"),
        "model_id": summary.get("modelId"),
        "submit_time": _iso(summary.get("submitTime")),
        "end_time": _iso(summary.get("endTime")),
        "message": message[:_MESSAGE_CHARS] if message else None,
        **progress,
        "percent": round(100 * processed / total) if total and processed is not None else None,
    }


def list_jobs(
    hook: BedrockBatchHook,
    *,
    status: str | None = None,
    name_contains: str | None = None,
    submitted_after: datetime | str | None = None,
    submitted_before: datetime | str | None = None,
    sort_order: str = "Descending",
    max_results: int = 100,
) -> list[dict[str, Any]]:
    """Jobs matching the filters as ``job_row`` dicts, following ``nextToken`` up to ``max_results``."""
    if sort_order not in SORT_ORDERS:
        raise ConfigError(f"sort_order must be one of {', '.join(SORT_ORDERS)}, got {sort_order!r}")
    if not 1 <= int(max_results) <= MAX_RESULTS:
        raise ConfigError(f"max_results must be between 1 and {MAX_RESULTS}, got {max_results!r}")
    status = check_status(status)
    name_contains = check_name_contains(name_contains)
    after = parse_time(submitted_after, "submitted_after")
    before = parse_time(submitted_before, "submitted_before")
    if after and before and after >= before:
        raise ConfigError(f"submitted_after ({after.isoformat()}) must be before submitted_before")
    return [
        job_row(summary)
        for summary in hook.iter_jobs(
            status=status,
            name_contains=name_contains,
            submitted_after=after,
            submitted_before=before,
            sort_order=sort_order,
            max_items=int(max_results),
        )
    ]


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A fixed-width text table for the task log."""
    columns = list(
        columns or ("submit_time", "status", "processed_records", "total_records", "job_name", "job_arn")
    )
    if not rows:
        return "(no jobs)"
    cells = [[("" if row.get(col) is None else str(row.get(col))) for col in columns] for row in rows]
    widths = [max(len(col), *(len(line[i]) for line in cells)) for i, col in enumerate(columns)]
    lines = ["  ".join(col.ljust(width) for col, width in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines += [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)) for line in cells
    ]
    return "\n".join(lines)


# -- stop -----------------------------------------------------------------------------------------


_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def check_region(region: str | None) -> str | None:
    """An AWS region name (``eu-west-1``), or None for the connection's; else a ConfigError naming it."""
    region = (region or "").strip()
    if not region:
        return None
    if not _REGION.match(region):
        raise ConfigError(f"region {region!r} is not an AWS region name such as us-east-1 or eu-west-1")
    return region


DEFAULT_AWS_CONN_ID = "aws_default"


@dataclass(frozen=True)
class AwsAccess:
    """The Airflow AWS connection and region the ops tools ask Bedrock through."""

    conn_id: str
    region: str | None

    def bedrock_hook(self) -> BedrockBatchHook:
        from bedrock_batch.hooks import BedrockBatchHook

        return BedrockBatchHook(aws_conn_id=self.conn_id, region_name=self.region)

    def s3_client(self) -> Any:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        return AwsBaseHook(aws_conn_id=self.conn_id, region_name=self.region, client_type="s3").conn


def aws_access(
    pipeline: str | None, region: str | None = None, *, render: Callable[[str], str] | None = None
) -> AwsAccess:
    """
    Where to ask Bedrock: pipeline ``pipeline``'s ``aws.conn_id`` and ``aws.region`` (``region``, when
    given, wins), or the ``aws_default`` connection and ``region`` when no pipeline is named.

    A pipeline whose jobs run under a connection of its own (another account, another role) is only
    seen through that connection. ``render`` renders a templated ``aws.region``; without it (the
    page has no task context) such a region must be given. Mistakes are ConfigErrors naming them.
    """
    from bedrock_batch.config import is_template

    region = check_region(region)
    if not (pipeline or "").strip():
        return AwsAccess(DEFAULT_AWS_CONN_ID, region)
    config = pipeline_config(pipeline.strip())
    if region is None and config.aws.region:
        configured = config.aws.region
        if is_template(configured):
            if render is None:
                raise ConfigError(
                    f"pipeline {config.name!r}: its aws.region is a template ({configured}); give the region"
                )
            configured = render(configured)
        try:
            region = check_region(configured)
        except ConfigError as err:
            raise ConfigError(f"pipeline {config.name!r}: aws.region: {err}") from None
    return AwsAccess(config.aws.conn_id, region)


def check_job_arn(job_arn: str | None) -> str:
    """``job_arn`` when it is a model-invocation-job ARN, else a ConfigError that shows the format."""
    from bedrock_batch.hooks import BedrockBatchHook

    job_arn = (job_arn or "").strip()
    try:
        BedrockBatchHook.job_id_from_arn(job_arn)
    except ConfigError:
        raise ConfigError(
            f"{job_arn!r} is not a Bedrock batch job ARN; expected "
            "arn:aws:bedrock:<region>:<account>:model-invocation-job/<job id>"
        ) from None
    return job_arn


def stop_job(hook: BedrockBatchHook, job_arn: str) -> dict[str, Any]:
    """Stop a job; a job that already finished is reported, not an error. ``stopped`` is whether
    this call stopped it: Bedrock took the stop (a job may end between the status read and the call)."""
    job_arn = check_job_arn(job_arn)
    before = hook.get_job(job_arn)["status"]
    outcome = hook.request_stop(job_arn)
    return {
        "job_arn": job_arn,
        "status_before": before,
        "status": outcome.status,
        "stopped": outcome.accepted,
    }


# -- reconcile ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Orphan:
    """A project job no DAG run tracks: its summary and the run its tags name."""

    job: Mapping[str, Any]
    ref: RunRef
    prompt_version: str | None = None
    """The prompt version its tags name (None for a job submitted before they did)."""

    @property
    def job_arn(self) -> str:
        return str(self.job["jobArn"])


def run_tracks_job(*, run_state: str | None, submitted_arns: Sequence[str], job_arn: str) -> bool:
    """
    Whether a DAG run tracks ``job_arn``, given the run's state (None: no such run) and the ARNs
    its submit tasks returned.

    A run that has not finished counts as tracking every job tagged with it: its submit task may
    have created the job and not yet returned, and stopping or loading that job would race it.
    """
    if run_state is None:
        return False
    return job_arn in submitted_arns or run_state not in ("success", "failed")


def find_orphans(
    hook: BedrockBatchHook,
    *,
    is_tracked: Tracker,
    status: str | None = None,
    name_contains: str | None = None,
    submitted_after: datetime | str | None = None,
    submitted_before: datetime | str | None = None,
    max_results: int = 100,
    input_roots: Sequence[str] | None = None,
) -> Iterator[Orphan]:
    """Project-tagged jobs among the newest ``max_results`` matching jobs that no run tracks.

    With ``input_roots`` (this deployment's pipelines' input folders, :func:`deployment_input_roots`)
    a job reading input elsewhere is another deployment's (same DAG and run ids, same AWS account):
    it is skipped, never stopped or adopted here.
    """
    for row in list_jobs(
        hook,
        status=status,
        name_contains=name_contains,
        submitted_after=submitted_after,
        submitted_before=submitted_before,
        max_results=max_results,
    ):
        tags = hook.get_job_tags(row["job_arn"])
        ref = run_ref(tags)
        if ref is None or is_tracked(ref, row["job_arn"]):
            continue
        job = hook.get_job(row["job_arn"])
        if input_roots is not None and not any(staged_under(job, root) for root in input_roots):
            log.info(
                "Job %s reads input outside this deployment's (%s): skipped",
                row["job_arn"],
                job_input_uri(job),
            )
            continue
        yield Orphan(job=job, ref=ref, prompt_version=prompt_version_of(tags))


def deployment_input_roots(render: Callable[[str], str] = str) -> list[str]:
    """The input folder of every pipeline of this deployment (templated buckets rendered)."""
    from bedrock_batch.config import discover_pipelines, is_template, load_pipeline

    roots = []
    for path in discover_pipelines():
        config = load_pipeline(path)
        bucket = config.staging.input_bucket
        roots.append(
            pipeline_input_root(
                render(bucket) if is_template(bucket) else bucket, config.staging.input_prefix, config.name
            )
        )
    return roots


class AdoptError(Exception):
    """A job cannot be adopted (no pipeline for its DAG, input not laid out by the stager, ...)."""


@dataclass(frozen=True)
class AdoptTarget:
    """Where an adopted job's output goes: its pipeline's config and warehouse, and the bucket owner."""

    config: PipelineConfig
    warehouse: Warehouse
    owner: Mapping[str, str]


def pipeline_target(dag_id: str, *, render: Callable[[str], str] = str) -> AdoptTarget | None:
    """
    The pipeline whose DAG is ``dag_id`` (the factory names each DAG after its config), or None.

    ``render`` renders templated config values (the expected bucket owner) at run time.
    """
    config = _pipeline_config_or_none(dag_id)
    return None if config is None else adopt_target(config, render=render)


def adopt_target(config: PipelineConfig, *, render: Callable[[str], str] = str) -> AdoptTarget:
    """A pipeline's warehouse and expected bucket owner (``render`` renders a templated owner)."""
    from bedrock_batch.config import is_template
    from bedrock_batch.warehouse import Warehouse

    tables = config.warehouse.tables()
    owner = config.staging.expected_bucket_owner
    if owner and is_template(owner):
        owner = render(owner)
    return AdoptTarget(
        config=config,
        warehouse=Warehouse(config.source.conn_id, tables, pipeline=config.name),
        owner={"ExpectedBucketOwner": owner} if owner else {},
    )


def staged_job_from(job: Mapping[str, Any]) -> StagedJob:
    """
    The staged job behind a Bedrock job, from its input and output URIs.

    The stager writes a job's input under ``{run_prefix}/jobs/{planned name}/`` and its record map at
    ``{run_prefix}/maps/{planned name}.jsonl``; the submit task names the Bedrock job after the
    planned name plus 8 hex characters of its request token (``operators.bedrock_job_name``). Any
    other layout or name was not staged by this project.
    """
    from bedrock_batch.staging import StagedJob

    name = str(job["jobName"])
    try:
        input_uri = job["inputDataConfig"]["s3InputDataConfig"]["s3Uri"]
        output_uri = job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"]
    except (KeyError, TypeError):
        raise AdoptError(f"job {name} has no S3 input or output configuration") from None
    run_prefix, _, planned = input_uri.rstrip("/").rpartition("/jobs/")
    if not run_prefix or "/" in planned or not input_uri.endswith("/"):
        raise AdoptError(
            f"job {name}: input {input_uri} is not a folder staged by this project (*/jobs/<job>/)"
        )
    if name != planned and not _TOKEN_SUFFIXED.fullmatch(name.removeprefix(planned)):
        raise AdoptError(
            f"job {name}: its input folder {input_uri} belongs to planned job {planned!r}, "
            "and the name is not that job's name plus its request token's 8 characters"
        )
    return StagedJob(
        index=0,
        job_name=planned,
        input_s3_uri=input_uri,
        output_s3_uri=output_uri,
        map_s3_uri=f"{run_prefix}/maps/{planned}.jsonl",
        files=[],
        records=int(job.get("totalRecordCount") or 0),
        bytes=0,
        est_input_tokens=0,
    )


class JobAdopter:
    """
    Collect an orphan's output into its pipeline's warehouse, under the run id its tags name.

    The load is the collect task's own (idempotent per run), so adopting twice gives the same rows.
    The output is read with ``s3_for(target)``: an S3 client on that pipeline's own AWS connection
    (one client per pipeline). Without a prompt-version tag on the job, the pipeline's current
    prompt version is recorded.
    """

    def __init__(
        self,
        *,
        s3_for: Callable[[AdoptTarget], Any],
        pipeline_for: Callable[[str], AdoptTarget | None] = pipeline_target,
    ) -> None:
        self.s3_for = s3_for
        self.pipeline_for = pipeline_for
        self._s3: dict[str, Any] = {}

    def __call__(self, orphan: Orphan) -> dict[str, Any]:
        from bedrock_batch.collect import collect_job
        from bedrock_batch.models import family_of_job
        from bedrock_batch.prompts import load_prompt

        target = self.pipeline_for(orphan.ref.dag_id)
        if target is None:
            raise AdoptError(
                f"no pipeline config named {orphan.ref.dag_id!r} to load job {orphan.job_arn} into"
            )
        staged = staged_job_from(orphan.job)
        model_id = str(orphan.job.get("modelId") or target.config.model.id)
        name = target.config.name
        if name not in self._s3:
            self._s3[name] = self.s3_for(target)
        outcome = collect_job(
            s3=self._s3[name],
            warehouse=target.warehouse,
            job=staged,
            job_info=dict(orphan.job),
            family=family_of_job(
                orphan.job, model_id=model_id, invocation_type=target.config.model.invocation_type
            ),
            run_id=orphan.ref.run_id,
            prompt_version=orphan.prompt_version or load_prompt(target.config.prompt_path).version,
            model_id=model_id,
            max_attempts=target.config.max_attempts,
            owner=dict(target.owner),
        )
        return outcome.to_dict()


def reconcile(
    hook: BedrockBatchHook,
    *,
    is_tracked: Tracker,
    mode: str = "report",
    adopter: Callable[[Orphan], dict[str, Any]] | None = None,
    **filters: Any,
) -> list[dict[str, Any]]:
    """
    Find orphans (``find_orphans`` with ``filters``) and report, adopt or stop each one.

    Returns one dict per orphan with the ``action`` taken; an orphan that could not be handled has
    ``action == "failed"`` and an ``error``, and the others are still handled. Adopting needs a job
    that has ended (its output is complete); a running orphan is left alone in adopt mode.
    """
    from bedrock_batch.hooks import TERMINAL_STATUSES

    if mode not in RECONCILE_MODES:
        raise ConfigError(f"reconcile mode must be one of {', '.join(RECONCILE_MODES)}, got {mode!r}")
    if mode == "adopt" and adopter is None:
        raise ConfigError("reconcile mode 'adopt' needs an adopter")
    results = []
    for orphan in find_orphans(hook, is_tracked=is_tracked, **filters):
        result = {**job_row(orphan.job), "dag_id": orphan.ref.dag_id, "run_id": orphan.ref.run_id}
        status = orphan.job.get("status")
        try:
            if mode == "report":
                result["action"] = "reported"
            elif mode == "stop":
                if status in TERMINAL_STATUSES:
                    result["action"] = f"none: already {status}"
                else:
                    outcome = hook.request_stop(orphan.job_arn)
                    result["status"] = outcome.status
                    result["action"] = "stopped" if outcome.accepted else f"none: already {outcome.status}"
            elif status not in TERMINAL_STATUSES:
                result["action"] = f"none: still {status}; adopt once it ends, or stop it"
            else:
                result["outcome"] = adopter(orphan)  # type: ignore[misc]
                result["action"] = "adopted"
        except Exception as error:  # one bad orphan must not hide the others
            log.exception("Reconciling job %s failed", orphan.job_arn)
            result["action"] = "failed"
            result["error"] = f"{type(error).__name__}: {error}"[:500]
            # A job that cannot be adopted stays so; anything else (the network, S3) may pass.
            result["retryable"] = not isinstance(error, AdoptError | ConfigError)
        log.info(
            "Orphan %s (%s) of %s / %s: %s",
            orphan.job_arn,
            status,
            orphan.ref.dag_id,
            orphan.ref.run_id,
            result["action"],
        )
        results.append(result)
    return results


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


# -- window claims --------------------------------------------------------------------------------

RunStateOf = Callable[[str, str], str | None]
"""``(dag_id, run_id) -> the run's state in Airflow ("running", "failed", ...), None if it has none``."""

NOT_IN_AIRFLOW = "not in Airflow"


def dag_run_state(ti: Any, dag_id: str, run_id: str) -> str | None:
    """A run's state through the Task SDK ("running", "failed", ...); None if Airflow has no such run."""
    if not ti.get_dr_count(dag_id=dag_id, run_ids=[run_id]):
        return None
    state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
    return str(getattr(state, "value", state))  # the Task SDK answers with an enum


def request_mistake(error: BaseException) -> str | None:
    """What is wrong with the operator's request, when retrying it cannot help; None otherwise.

    A ``ConfigError`` (a form field) or an AWS refusal of the request (``job_status.REFUSED_CODES``,
    e.g. a job ARN Bedrock does not know; or a conflict: a job that cannot be stopped in its state).
    """
    from bedrock_batch.job_status import REFUSED_CODES, aws_error_code

    if isinstance(error, ConfigError):
        return str(error)
    code = aws_error_code(error)
    if code in REFUSED_CODES or code == "ConflictException":  # Conflict: not stoppable in its state
        message = getattr(error, "response", {}).get("Error", {}).get("Message", "")
        return f"{code}: {message}".rstrip(": ")
    return None


def pipeline_names() -> list[str]:
    """Every pipeline with a config (its DAG id is its name)."""
    from bedrock_batch.config import discover_pipelines

    return [path.stem for path in discover_pipelines()]


def _pipeline_config_or_none(name: str) -> PipelineConfig | None:
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline

    path = PIPELINES_DIR / f"{name}.yaml"
    if name.startswith("_") or "/" in name or not path.is_file():
        return None
    return load_pipeline(path)


def pipeline_config(name: str) -> PipelineConfig:
    """The config of pipeline ``name`` (its DAG id); a ConfigError naming the known ones if none."""
    config = _pipeline_config_or_none(name)
    if config is None:
        known = ", ".join(pipeline_names())
        raise ConfigError(f"pipeline {name!r}: no such pipeline config (known: {known})")
    return config


def pipeline_warehouse(name: str) -> Warehouse:
    """The warehouse of pipeline ``name``, as it is: the ops DAG never migrates a pipeline's tables
    (that is the pipeline's own first task); tables from before window claims hold none."""
    return adopt_target(pipeline_config(name)).warehouse


def window_claim_rows(warehouse: Warehouse, pipeline: str, run_state: RunStateOf) -> list[dict[str, Any]]:
    """The pipeline's window claims for the task log, each with its holder's state in Airflow."""
    rows = []
    for claim in warehouse.window_claims():
        state = run_state(pipeline, claim["run_id"])
        rows.append(
            {
                "pipeline": pipeline,
                **{key: _iso(value) for key, value in claim.items()},
                "run_state": state or NOT_IN_AIRFLOW,
            }
        )
    return rows


def list_window_claims(
    pipelines: Sequence[str],
    run_state: RunStateOf,
    *,
    warehouse_of: Callable[[str], Warehouse] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The window claims of every pipeline in ``pipelines``, and why each one that could not be read failed.

    One pipeline whose warehouse is down (or whose config is broken) must not hide the others'
    claims from the on-call engineer, so its failure is returned by name instead of raised.
    """
    rows: list[dict[str, Any]] = []
    failures: dict[str, str] = {}
    for name in pipelines:
        try:
            warehouse = (warehouse_of or pipeline_warehouse)(name)
            rows += window_claim_rows(warehouse, name, run_state)
        except Exception as err:  # reported by pipeline name: the listing goes on
            log.warning("Window claims of pipeline %s could not be read: %s", name, err)
            failures[name] = f"{type(err).__name__}: {err}"
    return rows, failures


def release_window_claim(
    warehouse: Warehouse, pipeline: str, run_id: str | None, run_state: RunStateOf
) -> dict[str, Any]:
    """End ``run_id``'s window claims in ``pipeline``; refuse when it holds none, warn when it still runs."""
    if not run_id or not run_id.strip():
        raise ConfigError("run_id: name the run whose window claim to release (see the 'windows' action)")
    state = run_state(pipeline, run_id)
    released = warehouse.release_window(run_id=run_id)
    if not released:
        raise ConfigError(f"run_id: run {run_id!r} holds no window of pipeline {pipeline!r}")
    if state in {"queued", "running"}:
        log.warning(
            "Released the window of run %s of %s, which Airflow has as %s: a run over the same days may "
            "now stage and pay for its rows again",
            run_id,
            pipeline,
            state,
        )
    state_text = state or NOT_IN_AIRFLOW
    return {"pipeline": pipeline, "run_id": run_id, "run_state": state_text, "released": released}
