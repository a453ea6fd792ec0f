"""Prepare a run: source rows -> checked records -> quota plan -> JSONL staged in S3.

One pass over the source, streamed: rows are read in chunks, turned into records (bad rows become
recorded rejections), and written straight to S3 as they come. Only the plan (S3 URIs and counts) is
returned, so it is all that travels in XCom.

The number of jobs is planned from a COUNT of the same selection, so job sizes are balanced and none
falls under the service's minimum. Rows that are rejected make the last job shorter; if that pushes it
under the minimum, its records are carried over to the next run rather than submitted to fail.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from bedrock_batch.config import PipelineConfig, check_runtime_values, on_demand_model_id
from bedrock_batch.errors import ConfigError, EarlierTryError, QuotaError
from bedrock_batch.heap import frozen_heap
from bedrock_batch.job_status import ACTIVE_STATUSES, TERMINAL_STATUSES
from bedrock_batch.models import check_model_override, family_for, family_of_job
from bedrock_batch.prompts import load_prompt
from bedrock_batch.quotas import BatchQuotas, default_quotas, plan_job_sizes, quotas_from_service
from bedrock_batch.records import BatchRecord, RecordBuilder, Rejection, SourceRow, run_key
from bedrock_batch.staging import DiscardingS3, JsonlStager, StagePlan, iter_record_map
from bedrock_batch.warehouse import SourceSpec
from bedrock_batch.windows import Window

if TYPE_CHECKING:
    from bedrock_batch.models import ModelFamily
    from bedrock_batch.prompts import PromptTemplate
    from bedrock_batch.warehouse import Warehouse

log = logging.getLogger(__name__)

SMALL_BATCH_CARRY_OVER = "carry_over"
SMALL_BATCH_ON_DEMAND = "on_demand"
SMALL_BATCH_FAIL = "fail"


@dataclass(frozen=True)
class RuntimeSettings:
    """Values rendered by Airflow at run time (environment-specific) plus the run's params."""

    role_arn: str
    input_bucket: str
    output_bucket: str
    kms_key_id: str | None = None
    expected_bucket_owner: str | None = None
    model_id: str | None = None
    record_limit: int | None = None
    re_summarize: bool = False
    dry_run: bool = False

    def check(self, pipeline: str) -> None:
        check_runtime_values(
            {
                "aws.role_arn": self.role_arn,
                "staging.input_bucket": self.input_bucket,
                "staging.output_bucket": self.output_bucket,
                "staging.kms_key_id": self.kms_key_id,
                "staging.expected_bucket_owner": self.expected_bucket_owner,
            },
            pipeline=pipeline,
        )


@dataclass
class PrepareCounts:
    """How the run's source rows were split up; every row lands in exactly one bucket."""

    source_rows: int = 0
    rejected: int = 0
    staged: int = 0
    carried_over: int = 0
    on_demand: int = 0
    left_unread: int = 0
    """Rows past ``record_limit`` (carried-over keys first, then the window): not read by this run."""
    by_origin: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source_rows": self.source_rows,
            "rejected": self.rejected,
            "staged": self.staged,
            "carried_over": self.carried_over,
            "on_demand": self.on_demand,
            "left_unread": self.left_unread,
            "by_origin": dict(self.by_origin),
        }


def resolve_quotas(config: PipelineConfig, model_id: str, service_quotas_client: Any | None) -> BatchQuotas:
    """Documented defaults, then the account's live values if readable, then the config's overrides."""
    quotas = default_quotas(model_id)
    if config.jobs.read_live_quotas and service_quotas_client is not None:
        quotas = quotas_from_service(service_quotas_client, model_id, quotas)
    return quotas.with_overrides(config.jobs.quota_overrides)


class RejectionSink:
    """Writes rejected rows to the error table in batches, so none is dropped and memory stays flat."""

    def __init__(
        self, warehouse: Warehouse | None, *, run_id: str, prompt_version: str, batch: int = 1000
    ) -> None:
        self._warehouse = warehouse
        self._run_id = run_id
        self._prompt_version = prompt_version
        self._batch = batch
        self._pending: list[Rejection] = []
        self.count = 0
        self.keyless = 0
        self.by_code: dict[str, int] = {}

    def add(self, rejection: Rejection) -> None:
        if rejection.source_key is None:
            # A row without a key still gets an error row: keyed by its place among this run's keyless
            # rows (the read order is deterministic, so a rerun writes the same rows).
            self.keyless += 1
            rejection = replace(rejection, source_key=f"(null key #{self.keyless})")
        self.count += 1
        self.by_code[rejection.code] = self.by_code.get(rejection.code, 0) + 1
        self._pending.append(rejection)
        if len(self._pending) >= self._batch:
            self.flush()

    def flush(self) -> None:
        if self._pending and self._warehouse is not None:
            self._warehouse.record_rejections(
                self._pending, run_id=self._run_id, prompt_version=self._prompt_version
            )
        self._pending = []


def iter_records(
    rows: Iterable[Mapping[str, Any]],
    config: PipelineConfig,
    builder: RecordBuilder,
    rejections: RejectionSink,
    counts: PrepareCounts,
) -> Iterator[BatchRecord]:
    """Build records from warehouse rows; rejected rows go to the sink, never silently away."""
    extra_columns = tuple(config.source.extra_columns)
    key_column = config.source.key_column
    by_origin = counts.by_origin
    build = builder.build_from
    for row in rows:
        counts.source_rows += 1
        origin = str(row.get("origin") or "window")
        by_origin[origin] = by_origin.get(origin, 0) + 1
        key = row["source_key"]
        built = build(
            key, row["text"], _prompt_fields(row, extra_columns, key_column), int(row.get("attempt") or 1)
        )
        if type(built) is Rejection:
            rejections.add(built)
        else:
            yield built


@frozen_heap()
def stage_records(
    rows: Iterable[Mapping[str, Any]],
    config: PipelineConfig,
    builder: RecordBuilder,
    rejections: RejectionSink,
    counts: PrepareCounts,
    stager: JsonlStager,
    *,
    capacity: int,
) -> list[str]:
    """
    Build and stage the records of ``rows`` (as :func:`iter_records` then ``stager.add``, faster);
    returns the keys of records past ``capacity`` (rows that arrived after the run was counted).

    This is the loop a million-row night spends its time in: the usual row goes through
    ``builder.fast_line`` and ``stager.add_line`` without a record object; any other row through
    ``builder.build_from``, which checks it one step at a time and words its rejection.
    """
    extra_columns = tuple(config.source.extra_columns)
    key_column = config.source.key_column
    by_origin = counts.by_origin
    build = builder.build_from
    fast = builder.fast_line if builder.takes_fast_lines else None
    add_line = stager.add_line
    overflow: list[str] = []
    staged = counts.staged
    read = 0
    try:
        for row in rows:
            read += 1
            origin = row.get("origin") or "window"
            if type(origin) is not str:
                origin = str(origin)
            by_origin[origin] = by_origin.get(origin, 0) + 1
            key = row["source_key"]
            text = row["text"]
            attempt = row.get("attempt") or 1
            if type(attempt) is not int:
                attempt = int(attempt)
            made = None
            if fast is not None and type(key) is str and type(text) is str:
                made = fast(key, text)
            if made is not None:
                record_id, line, tokens = made
            else:
                built = build(key, text, _prompt_fields(row, extra_columns, key_column), attempt)
                if type(built) is Rejection:
                    rejections.add(built)
                    continue
                assert built.line is not None  # the builder writes every record's line
                record_id, key, line = built.record_id, built.source_key, built.line
                tokens = built.est_input_tokens
            if staged >= capacity:
                overflow.append(key)
                continue
            add_line(record_id, key, attempt, line, tokens)
            staged += 1
    finally:
        counts.source_rows += read
        counts.staged = staged
    return overflow


def describe_window(window: Window) -> str:
    return f"{window.label} [{window.start.isoformat()} .. {window.end.isoformat()})"


def job_name_prefix(pipeline: str, window: Window, run_key_value: str) -> str:
    """``<pipeline>-<window day>-<run hash>``: readable, unique per run, and short enough that
    ``-jNNN`` keeps it within Bedrock's 63-character job names."""
    stem = pipeline.replace("_", "-")[:24].strip("-")
    day = "".join(ch for ch in window.label if ch.isdigit())[:8] or "window"
    return f"{stem}-{day}-{run_key_value.rsplit('-', 1)[-1]}"


def run_job_marker(dag_id: str, run_id: str) -> str:
    """``<run hash>-j``: in every job name of one run (:func:`job_name_prefix`), and in no other run's.

    It starts with a letter or digit, as ListModelInvocationJobs wants of ``nameContains``.
    """
    return f"{run_key(dag_id, run_id).rsplit('-', 1)[-1]}-j"


def record_builder(config: PipelineConfig, family: ModelFamily, prompt: PromptTemplate) -> RecordBuilder:
    """The record builder of one run of ``config`` (one per run: it remembers the keys it saw)."""
    return RecordBuilder(
        family,
        prompt,
        config.model.params,
        on_too_long=config.model.on_too_long,
        text_field=config.source.text_column,
    )


def source_row(row: Mapping[str, Any], config: PipelineConfig) -> SourceRow:
    """A warehouse row as the record builder takes it; the key is a prompt field too."""
    fields = _prompt_fields(row, config.source.extra_columns, config.source.key_column)
    return SourceRow(
        source_key=row["source_key"], text=row["text"], fields=fields, attempt=int(row.get("attempt") or 1)
    )


def _prompt_fields(row: Mapping[str, Any], extra_columns: Iterable[str], key_column: str) -> dict[str, Any]:
    """The values a prompt may name: the extra columns, and the key under its column's name."""
    fields = {name: row.get(name) for name in extra_columns}
    fields[key_column] = row["source_key"]
    return fields


def _is_overdue(row: Mapping[str, Any], max_age_days: int, now: dt.datetime) -> bool:
    since = row.get("pending_since")
    if since is None:
        return False
    if isinstance(since, str):
        since = dt.datetime.fromisoformat(since)
    if since.tzinfo is None:
        since = since.replace(tzinfo=dt.UTC)
    return now - since >= dt.timedelta(days=max_age_days)


@dataclass
class RunContext:
    """Who is running: the names the S3 layout, job names and warehouse rows are keyed on."""

    dag_id: str
    run_id: str

    @property
    def key(self) -> str:
        return run_key(self.dag_id, self.run_id)


_ENDED_OR_ENDING = TERMINAL_STATUSES | {"Stopping"}
"""The earlier jobs that count as a generation of their planned job."""


def source_spec(config: PipelineConfig) -> SourceSpec:
    """Where the pipeline's source rows are, as the warehouse reads them."""
    return SourceSpec(
        table=config.source.table,
        key_column=config.source.key_column,
        text_column=config.source.text_column,
        timestamp_column=config.source.timestamp_column,
        extra_columns=tuple(config.source.extra_columns),
    )


class RunPreparer:
    """Reads the run's rows once and leaves every one of them accounted for."""

    def __init__(
        self,
        *,
        config: PipelineConfig,
        settings: RuntimeSettings,
        window: Window,
        run: RunContext,
        warehouse: Warehouse,
        s3: Any,
        quotas: BatchQuotas,
        run_is_live: Callable[[str], bool | None] | None = None,
        earlier_jobs: Callable[[], list[Mapping[str, Any]]] | None = None,
        job_tags: Callable[[str], Any] | None = None,
    ) -> None:
        self.config = config
        self.settings = settings
        self.window = window
        self.run = run
        self.warehouse = warehouse
        self.s3 = s3
        self.quotas = quotas
        # Asked once per run: a run holding both this window and queued keys is judged the same for both.
        self.run_is_live = functools.cache(run_is_live) if run_is_live is not None else None
        """Whether another run is still in flight (Airflow's answer); ``None`` when unknown."""
        self.earlier_jobs = earlier_jobs
        """The Bedrock jobs earlier tries of this run submitted (their summaries, any status)."""
        self.job_tags = job_tags
        """A job's tags by ARN: the prompt version an earlier try's job was built with."""
        self.started_at = dt.datetime.now(dt.UTC)
        """Before any row is read (a preparer is made to run :meth:`prepare` at once): rows another
        run summarized after it were not summarized when this run read them."""
        self._ended: list[str] = []
        """Names of those that ended or are stopping: the generations of a planned job."""
        self.model_id = settings.model_id or config.model.id
        if self.model_id != config.model.id:
            check_model_override(config.model.id, self.model_id, config.model.invocation_type)
        # The configured window is the configured model's; a run's model_id param gets its own.
        window = config.model.context_tokens if self.model_id == config.model.id else None
        self.family = family_for(self.model_id, config.model.invocation_type, context_tokens=window)
        try:
            self.on_demand_model_id = on_demand_model_id(config, self.model_id)
        except ConfigError as exc:
            raise ConfigError(f"model_id param: {exc}") from None
        self.prompt = load_prompt(config.prompt_path)
        self.counts = PrepareCounts()
        self.writes = not settings.dry_run
        self.rejections = RejectionSink(
            warehouse if self.writes else None, run_id=run.run_id, prompt_version=self.prompt.version
        )
        self.source = source_spec(config)
        self.input_prefix = f"{config.staging.input_prefix}/{config.name}/{run.key}"
        self.output_prefix = f"{config.staging.output_prefix}/{config.name}/{run.key}"

    def _builder(self) -> RecordBuilder:
        return record_builder(self.config, self.family, self.prompt)

    def _selection(self, limit: int | None) -> dict[str, Any]:
        """Which rows the run takes: the same for reading them and for counting them."""
        return {
            "start": self.window.start,
            "end": self.window.end,
            "prompt_version": self.prompt.version,
            "max_attempts": self.config.max_attempts,
            "run_id": self.run.run_id,
            "limit": limit,
            "include_summarized": self.settings.re_summarize,
            "claimed_only": self.writes,
        }

    def _rows(self, limit: int | None) -> Iterator[Mapping[str, Any]]:
        return self.warehouse.iter_source_rows(
            self.source, chunk_size=self.config.read_chunk_rows, **self._selection(limit)
        )

    def _count(self, limit: int | None) -> int:
        return self.warehouse.count_source_rows(self.source, **self._selection(limit))

    def _carry_over(self, keys: Iterable[str]) -> int:
        keys = list(keys)
        # Rejections first: writing one takes its key off the pending queue, which would drop a key
        # carried over here whose duplicate row was rejected (the valid row then never runs).
        self.rejections.flush()
        if keys and self.writes:
            self.warehouse.carry_over(
                keys, run_id=self.run.run_id, prompt_version=self.prompt.version, reason="carried_over"
            )
        self.counts.carried_over += len(keys)
        return len(keys)

    def _settle_earlier_jobs(self) -> list[tuple[str, str]]:
        """Load the ended jobs earlier tries of this run submitted that nothing loaded; return
        ``(job name, why)`` of each one that still runs (or cannot be loaded).

        Staging rewrites each planned job's input folder and record map, so an ended job's output
        (billed) is loaded first, with its record map as it is, as its collect task would have: its
        records then count as summarized or errored, or are queued again, before rows are read.
        """
        if self.earlier_jobs is None:
            return []
        unsettled = []
        for job in self.earlier_jobs():
            arn, name, status = job.get("jobArn"), str(job.get("jobName")), job.get("status")
            if status in _ENDED_OR_ENDING:
                self._ended.append(name)
            if status in ACTIVE_STATUSES:
                unsettled.append((name, f"{name} ({arn}) is still {status}"))
            elif arn and not self.warehouse.job_loaded(str(arn), run_id=self.run.run_id):
                problem = self._load_earlier_job(job)
                if problem is not None:
                    unsettled.append((name, f"{name} ({arn}) ended {status}, and {problem}"))
        return unsettled

    def _load_earlier_job(self, job: Mapping[str, Any]) -> str | None:
        """Collect an earlier try's ended job into the warehouse; why it cannot be, else ``None``."""
        from bedrock_batch.collect import collect_job
        from bedrock_batch.ops import AdoptError, staged_job_from

        try:
            staged = staged_job_from(job)
        except AdoptError as err:
            return f"its output cannot be loaded: {err}"
        model_id = str(job.get("modelId") or self.model_id)
        log.warning(
            "Job %s of an earlier try of this run ended %s and its output was never loaded: loading it "
            "before staging again",
            job.get("jobArn"),
            job.get("status"),
        )
        collect_job(
            s3=self.s3,
            warehouse=self.warehouse,
            job=staged,
            job_info=dict(job),
            family=family_of_job(job, model_id=model_id, invocation_type=self.config.model.invocation_type),
            run_id=self.run.run_id,
            prompt_version=self._prompt_version_of(job),
            model_id=model_id,
            max_attempts=self.config.max_attempts,
            owner=_owner(self.settings),
        )
        return None

    def _prompt_version_of(self, job: Mapping[str, Any]) -> str:
        """The prompt version ``job`` was built with (its tag), else the current one."""
        from bedrock_batch.job_tags import prompt_version_of

        tagged = prompt_version_of(self.job_tags(str(job.get("jobArn")))) if self.job_tags else None
        if tagged and tagged != self.prompt.version:
            log.warning(
                "Job %s was built with prompt version %s (now %s): its output is filed under %s",
                job.get("jobArn"),
                tagged,
                self.prompt.version,
                tagged,
            )
        return tagged or self.prompt.version

    def _refuse_other_input(self, unsettled: list[tuple[str, str]], resubmitted: set[str]) -> None:
        """Fail, before anything is staged, unless each unsettled job is one this plan submits again.

        The same input gives the same job name and request token, so the submit task gets that job
        back from Bedrock (a try killed after the create). Other input would be read by a job that
        still runs, and its output could not be joined to its records (billed, never loaded).
        """
        blockers = [why for name, why in unsettled if name not in resubmitted]
        if blockers:
            raise EarlierTryError(
                f"Run {self.run.run_id} of {self.config.name}: staging again would change the input "
                f"of jobs an earlier try of this run submitted: {'; '.join(blockers)}. Let a running "
                "job end (or stop it: bedrock_batch_ops action=stop), then clear the run from prepare "
                "again: prepare loads an ended job's output before it stages."
            )

    def _resubmitted_names(self, sizes: list[int]) -> set[str]:
        """The Bedrock job names the jobs of this staging would get, planned without writing anything."""
        from bedrock_batch.operators import bedrock_job_name, staged_job_token

        stager = self._stager(DiscardingS3(), sizes)
        with stager:
            stage_records(
                self._rows(self.settings.record_limit),
                self.config,
                self._builder(),
                RejectionSink(None, run_id=self.run.run_id, prompt_version=self.prompt.version),
                PrepareCounts(),
                stager,
                capacity=sum(sizes),
            )
        assert stager.plan is not None
        return {
            bedrock_job_name(
                job.job_name,
                staged_job_token(
                    dag_id=self.run.dag_id,
                    run_id=self.run.run_id,
                    job=replace(job, generation=self._generation(job.job_name)),
                ),
            )
            for job in stager.plan.jobs
            if job.records >= self.quotas.min_records_per_job  # a shorter one is carried over, not submitted
        }

    def prepare(self) -> dict[str, Any]:
        """Stage the run's input; return the plan for XCom (URIs and counts only)."""
        self.warehouse.ensure_schema()
        unsettled = self._settle_earlier_jobs() if self.writes else []
        if self.writes:
            # Before any row is read: a second run over days whose rows are in flight stops here.
            self.warehouse.claim_window(
                run_id=self.run.run_id,
                prompt_version=self.prompt.version,
                start=self.window.start,
                end=self.window.end,
                run_is_live=self.run_is_live,
            )
            if self.run_is_live is not None:
                self.warehouse.judge_claims(run_id=self.run.run_id, run_is_live=self.run_is_live)
            self.warehouse.requeue_other_prompt_versions(
                run_id=self.run.run_id, prompt_version=self.prompt.version
            )
            claimed = self.warehouse.claim_pending(
                run_id=self.run.run_id,
                prompt_version=self.prompt.version,
                limit=self.settings.record_limit,
                max_attempts=self.config.max_attempts,
                include_summarized=self.settings.re_summarize,
            )
            if claimed:
                log.info("Claimed %d carried-over or retried keys for this run", claimed)
            exhausted = self.warehouse.dead_letter_exhausted(
                run_id=self.run.run_id,
                prompt_version=self.prompt.version,
                max_attempts=self.config.max_attempts,
            )
            if exhausted:
                log.warning(
                    "Dead-lettered %d queued keys already tried max_attempts (%d) times: they were queued "
                    "when max_attempts was higher (error code attempts_exhausted)",
                    exhausted,
                    self.config.max_attempts,
                )
        expected = self._count(self.settings.record_limit)
        if self.settings.record_limit is not None:
            self.counts.left_unread = self._count(None) - expected
            if self.counts.left_unread:
                log.warning(
                    "record_limit %d leaves %d rows unread (carried-over keys first, then window %s): a "
                    "later run over this window (a rerun or backfill of these days) takes them; the next "
                    "scheduled run takes only the carried-over ones",
                    self.settings.record_limit,
                    self.counts.left_unread,
                    describe_window(self.window),
                )
        log.info(
            "Pipeline %s, window %s: %d source rows to consider (model %s, prompt %s %s)",
            self.config.name,
            describe_window(self.window),
            expected,
            self.model_id,
            self.prompt.name,
            self.prompt.version,
        )
        if expected < self.quotas.min_records_per_job:
            self._refuse_other_input(unsettled, set())
            rows = list(self._rows(self.settings.record_limit))
            plan, on_demand = None, self._small_batch(rows, capacity=expected)
        else:
            plan, on_demand = self._stage(expected, unsettled), None
        self.rejections.flush()
        self.counts.rejected = self.rejections.count
        jobs = [job.to_dict() for job in plan.jobs] if plan else []
        result = {
            "pipeline": self.config.name,
            "run_key": self.run.key,
            "window": self.window.to_dict(),
            "model_id": self.model_id,
            "on_demand_model_id": self.on_demand_model_id,
            # The bodies were built for this API: submit and on demand use it, whatever is deployed later.
            "invocation_type": self.config.model.invocation_type,
            "prompt_version": self.prompt.version,
            "dry_run": self.settings.dry_run,
            "quotas": self.quotas.to_dict(),
            "counts": self.counts.to_dict(),
            "rejected_by_code": dict(self.rejections.by_code),
            "jobs": [] if self.settings.dry_run else jobs,
            "planned_jobs": jobs,
            "on_demand": on_demand,
            "est_input_tokens": sum(job["est_input_tokens"] for job in jobs),
        }
        log.info(
            "Prepared %s: %d rows -> %d staged in %d jobs, %d rejected, %d carried over, %d on demand%s",
            self.config.name,
            self.counts.source_rows,
            self.counts.staged,
            len(jobs),
            self.counts.rejected,
            self.counts.carried_over,
            self.counts.on_demand,
            " (dry run: nothing submitted)" if self.settings.dry_run else "",
        )
        return result

    def _stager(self, s3: Any, sizes: list[int]) -> JsonlStager:
        return JsonlStager(
            s3,
            bucket=self.settings.input_bucket,
            prefix=self.input_prefix,
            job_sizes=sizes,
            quotas=self.quotas,
            job_name_prefix=job_name_prefix(self.config.name, self.window, self.run.key),
            output_bucket=self.settings.output_bucket,
            output_prefix=self.output_prefix,
            kms_key_id=self.settings.kms_key_id,
            expected_bucket_owner=self.settings.expected_bucket_owner,
            upload_threads=self.config.staging.upload_threads,
        )

    def _stage(self, expected: int, unsettled: list[tuple[str, str]]) -> StagePlan:
        sizes = plan_job_sizes(expected, self.quotas)
        capacity = sum(sizes)
        if unsettled:
            self._refuse_other_input(unsettled, self._resubmitted_names(sizes))
        stager = self._stager(self.s3, sizes)
        with stager:
            # Rows that arrived after the count overflow the plan: the next run takes them.
            overflow = stage_records(
                self._rows(self.settings.record_limit),
                self.config,
                self._builder(),
                self.rejections,
                self.counts,
                stager,
                capacity=capacity,
            )
        plan = stager.plan
        assert plan is not None
        if overflow:
            log.warning(
                "%d rows arrived after the run was planned; carried over to the next run", len(overflow)
            )
            self._carry_over(overflow)
        short = [job for job in plan.jobs if job.records < self.quotas.min_records_per_job]
        if short:
            for job in short:
                log.warning(
                    "Job %s has %d records, under the minimum of %d (rows were rejected): carried over",
                    job.job_name,
                    job.records,
                    self.quotas.min_records_per_job,
                )
                entries = iter_record_map(self.s3, job.map_s3_uri, owner=_owner(self.settings))
                self._carry_over(key for _, key, _ in entries)
                self.counts.staged -= job.records
            plan = StagePlan(plan.bucket, plan.prefix, [job for job in plan.jobs if job not in short])
        return StagePlan(
            plan.bucket,
            plan.prefix,
            [
                replace(job, generation=self._generation(job.job_name), prompt_version=self.prompt.version)
                for job in plan.jobs
            ],
        )

    def _generation(self, planned_name: str) -> int:
        """How many jobs of ``planned_name`` earlier tries of this run submitted that have ended (or
        are stopping): a run cleared after one gets a new job (new token and name), where the same
        token would give the ended job back. Staging the same input again after an ended job means
        its records are all still to do (any it summarized are not read again), whatever its status;
        a job still stopping fails prepare until it has stopped (its output is loaded first)."""
        return sum(name.startswith(f"{planned_name}-") for name in self._ended)

    def _small_batch(self, rows: list[Mapping[str, Any]], *, capacity: int) -> dict[str, Any] | None:
        """Fewer rows than a job's minimum: carry them over, run them on demand, or fail.

        Records past ``capacity`` (the rows counted) came from rows that arrived after the count: they
        are carried over, as staging does, so a bulk insert landing between the two never goes on
        demand at twice the batch price, nor fails the run under ``small_batch.policy: fail``.
        """
        records: list[BatchRecord] = list(
            iter_records(rows, self.config, self._builder(), self.rejections, self.counts)
        )
        if len(records) > capacity:
            late = records[capacity:]
            del records[capacity:]
            log.warning("%d rows arrived after the run was counted; carried over to the next run", len(late))
            self._carry_over(record.source_key for record in late)
        if not records:
            return None
        policy = self.config.small_batch.policy
        minimum = self.quotas.min_records_per_job
        if policy == SMALL_BATCH_FAIL:
            self.rejections.flush()
            raise QuotaError(
                f"pipeline {self.config.name}: {len(records)} records is under the minimum of {minimum} "
                "per batch job and small_batch.policy is 'fail'"
            )
        now = dt.datetime.now(dt.UTC)
        overdue = any(_is_overdue(row, self.config.small_batch.max_age_days, now) for row in rows)
        if policy == SMALL_BATCH_CARRY_OVER and not overdue:
            log.info(
                "%d records is under the batch minimum of %d: carried over to the next run",
                len(records),
                minimum,
            )
            self._carry_over(record.source_key for record in records)
            return None
        log.info(
            "%d records is under the batch minimum of %d: running them on demand (%s)",
            len(records),
            minimum,
            "policy on_demand" if policy == SMALL_BATCH_ON_DEMAND else "carried too long",
        )
        self.counts.on_demand = len(records)
        staged = stage_on_demand(
            self.s3,
            records,
            bucket=self.settings.input_bucket,
            prefix=f"{self.input_prefix}/on_demand",
            settings=self.settings,
        )
        # A summary another run loads after this (its key was carried over and taken) is not re-made.
        return {**staged, "read_since": self.started_at.isoformat()}


def _owner(settings: RuntimeSettings) -> dict[str, str]:
    return {"ExpectedBucketOwner": settings.expected_bucket_owner} if settings.expected_bucket_owner else {}


def stage_on_demand(
    s3: Any, records: list[BatchRecord], *, bucket: str, prefix: str, settings: RuntimeSettings
) -> dict[str, Any]:
    """A small batch goes to S3 as one JSONL (records and map), so the on-demand task reads it from there."""
    import orjson

    body = b"".join(
        orjson.dumps({**record.input_line(), "map": record.map_line()}) + b"\n" for record in records
    )
    extra: dict[str, str] = dict(_owner(settings))
    if settings.kms_key_id:
        extra.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=settings.kms_key_id)
    key = f"{prefix}/records.jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
    return {"records_s3_uri": f"s3://{bucket}/{key}", "records": len(records), "bytes": len(body)}
