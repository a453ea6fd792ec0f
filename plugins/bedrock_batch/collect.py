"""Collect one job: stream its output files back, join on recordId, load one transaction.

Whatever state the job ended in, every record of its map ends as a summary, an error row, or a
retry in the pending queue: records Bedrock processed are loaded, records it did not (a Failed,
Stopped, Expired or PartiallyCompleted job, a line that could not be read, a job never submitted)
are queued for the next run with the reason, up to the pipeline's attempt limit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bedrock_batch.errors import OutputParseError
from bedrock_batch.heap import frozen_heap
from bedrock_batch.models import ModelFamily
from bedrock_batch.results import (
    Manifest,
    Quarantined,
    ResultLine,
    iter_output_chunks,
    parse_manifest,
    reconcile,
)
from bedrock_batch.s3paths import iter_chunks, iter_lines, list_keys, split_s3_uri
from bedrock_batch.staging import StagedJob, iter_record_map
from bedrock_batch.warehouse import JOB_STAGE, MODEL_STAGE, OUTPUT_MISSING, ErrorRow, SummaryRow, Warehouse

log = logging.getLogger(__name__)

#: Record error codes worth another try in a later run; others (e.g. 400 invalid input) would fail again.
RETRYABLE_CODES = frozenset({"408", "424", "429", "500", "502", "503", "504"})
RETRYABLE_NAMES = (
    "throttl",
    "toomanyrequests",
    "too many requests",
    "serviceunavailable",
    "modelnotready",
    "not ready",
    "quotaexceeded",
)
"""Retried whatever the status code: botocore gives ServiceQuotaExceeded and others HTTP 400. Not a
bare "too many": a 400 saying "Too many input tokens" would fail again on every try."""
RETRYABLE_WORDS = ("timeout", "timed out", "unavailable", "internal", "capacity")
"""Retried only without a 4xx code: a 400 may name an "internal" field of the input."""

OUTPUT_STAGE = "output"
OUTPUT_UNREADABLE = "output_unreadable"


def is_retryable(code: str | None, message: str | None) -> bool:
    """Throttling, timeouts, quota and server-side errors are retried; input errors are not.

    An error named as retryable (throttling, quota, a model not ready) is retried whatever its code;
    vaguer words (internal, timeout, capacity) only without a 4xx code, which a 400 naming an
    "internal" field of the input has.
    """
    if code in RETRYABLE_CODES:
        return True
    text = f"{code or ''} {message or ''}".lower()
    if any(name in text for name in RETRYABLE_NAMES):
        return True
    if code and len(code) == 3 and code.startswith("4") and code.isdigit():
        return False
    return any(word in text for word in RETRYABLE_WORDS)


@dataclass
class JobOutcome:
    """Counts of one collected job (small: goes to XCom for the report)."""

    job_name: str
    job_arn: str | None
    status: str
    records: int
    summarized: int = 0
    model_errors: int = 0
    not_processed: int = 0
    output_unreadable: int = 0
    quarantined: int = 0
    unexpected: int = 0
    input_tokens: int = 0
    """Billed: the manifest's count when it gives one (and agrees with the output), else the summaries'."""
    output_tokens: int = 0
    retry: int = 0
    dead_lettered: int = 0
    manifest_problem: str | None = None
    quarantine_samples: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def read_record_map(s3: Any, map_uri: str, *, owner: dict[str, str]) -> dict[str, tuple[str, int]]:
    """The job's record_id -> (source key, attempt), as written by the stager."""
    return {
        record_id: (key, attempt) for record_id, key, attempt in iter_record_map(s3, map_uri, owner=owner)
    }


def output_prefix(job: StagedJob, job_arn: str) -> tuple[str, str]:
    """Bedrock writes under ``{outputDataConfig.s3Uri}/{job id}/``."""
    bucket, prefix = split_s3_uri(job.output_s3_uri)
    job_id = job_arn.rsplit("/", 1)[-1]
    return bucket, f"{prefix.rstrip('/')}/{job_id}/"


class JobCollector:
    """Reads one job's output and turns it into warehouse rows, counting as it goes."""

    def __init__(
        self,
        *,
        s3: Any,
        job: StagedJob,
        family: ModelFamily,
        outcome: JobOutcome,
        record_map: dict[str, tuple[str, int]],
        owner: dict[str, str],
    ) -> None:
        self.s3 = s3
        self.job = job
        self.family = family
        self.outcome = outcome
        self.record_map = record_map
        self.owner = owner
        self.seen: set[str] = set()
        self.errors: list[ErrorRow | None] = []
        """Model errors of the output lines; ``None`` where a later success line of the record won."""
        self.manifest: Manifest | None = None
        self.manifest_error: str | None = None
        self.unreadable: dict[str, str] = {}
        """Record id -> where and why its output line could not be read (it was processed and billed)."""

    def iter_lines(self, job_arn: str) -> Iterator[ResultLine]:
        bucket, prefix = output_prefix(self.job, job_arn)
        for key in list_keys(self.s3, bucket, prefix, owner=self.owner):
            name = key.rsplit("/", 1)[-1]
            if name == "manifest.json.out":
                data = b"".join(iter_lines(self.s3, bucket, key, owner=self.owner, keepends=True))
                try:
                    self.manifest = parse_manifest(data, file=key)
                except OutputParseError as err:  # only a cross-check: the records still load
                    self.manifest_error = str(err)
                    log.warning("Job %s: its manifest cannot be read: %s", self.job.job_name, err)
                continue
            if not name.endswith(".jsonl.out"):
                continue
            chunks = iter_chunks(self.s3, bucket, key, owner=self.owner)
            for items in iter_output_chunks(chunks, file=key, family=self.family):
                for item in items:
                    if type(item) is Quarantined:
                        self._quarantine(item)
                        continue
                    yield item  # type: ignore[misc]  # a ResultLine

    def _quarantine(self, item: Quarantined) -> None:
        if item.record_id is not None:
            self.unreadable.setdefault(item.record_id, f"{item.file}:{item.line_no}: {item.reason}")
        self.outcome.quarantined += 1
        if len(self.outcome.quarantine_samples) < 20:
            self.outcome.quarantine_samples.append(f"{item.file}:{item.line_no}: {item.reason}")
        log.warning("Quarantined output line %s:%d: %s", item.file, item.line_no, item.reason)

    def summaries(self, job_arn: str) -> Iterator[SummaryRow]:
        """Successful lines as rows; error lines are kept aside for the same transaction.

        Counts are kept in locals and added to the outcome when the lines end (or reading stops):
        this loop runs once per record of the job.
        """
        record_map, seen, outcome = self.record_map, self.seen, self.outcome
        errored_at: dict[str, int] = {}  # record id -> its error's place in self.errors
        unexpected = summarized = input_tokens = output_tokens = 0
        try:
            for line in self.iter_lines(job_arn):
                record_id = line.record_id
                entry = record_map.get(record_id)
                if entry is None or record_id in seen:
                    if entry is not None and line.output is not None and record_id in errored_at:
                        # A second line of a record whose first was an error: the success was billed
                        # too, and is what the record gets.
                        self.errors[errored_at.pop(record_id)] = None
                        outcome.model_errors -= 1
                    else:
                        unexpected += 1
                        continue
                seen.add(record_id)
                output = line.output
                if output is not None:
                    summarized += 1
                    input_tokens += output.input_tokens or 0
                    output_tokens += output.output_tokens or 0
                    yield SummaryRow(
                        entry[0], output.text, output.input_tokens, output.output_tokens, output.stop_reason
                    )
                    continue
                outcome.model_errors += 1
                errored_at[record_id] = len(self.errors)
                self.errors.append(
                    ErrorRow(
                        source_key=entry[0],
                        stage=MODEL_STAGE,
                        code=str(line.error_code),
                        message=line.error_message,
                        retryable=is_retryable(line.error_code, line.error_message),
                        attempt=entry[1],
                    )
                )
        finally:
            outcome.unexpected += unexpected
            outcome.summarized += summarized
            outcome.input_tokens += input_tokens
            outcome.output_tokens += output_tokens

    def unprocessed(self, *, code: str, message: str) -> Iterable[ErrorRow]:
        """Every mapped record the output did not account for: queued for a retry with the reason
        (which says whether the retry counts against ``max_attempts``: ``warehouse.spends_attempt``).

        A record whose only output line was unreadable was processed (and billed): it is recorded as
        an ``output`` error naming the file, line and reason, not retried (a rerun of its day sends
        it again).
        """
        for record_id in reconcile(set(self.record_map), self.seen, None).missing:
            key, attempt = self.record_map[record_id]
            where = self.unreadable.get(record_id)
            if where is not None:
                self.outcome.output_unreadable += 1
                yield ErrorRow(
                    source_key=key,
                    stage=OUTPUT_STAGE,
                    code=OUTPUT_UNREADABLE,
                    message=f"the job processed this record; its output line is unreadable: {where}"[:2000],
                    retryable=False,
                    attempt=attempt,
                )
                continue
            self.outcome.not_processed += 1
            yield ErrorRow(
                source_key=key, stage=JOB_STAGE, code=code, message=message, retryable=True, attempt=attempt
            )


def _bill_from_manifest(outcome: JobOutcome, manifest: Manifest) -> None:
    """The job's tokens as its manifest counts them, when it does: Bedrock's own totals, which also
    bill the records left without a summary (a response with no text, an output line that cannot be
    read). The summaries' own counts are what the output table holds."""
    billed = (manifest.input_token_count, manifest.output_token_count)
    if billed[0] is None or billed[1] is None:
        return
    summed = (outcome.input_tokens, outcome.output_tokens)
    if billed != summed:
        log.info(
            "Job %s: its manifest bills %d input / %d output tokens, its summaries hold %d / %d; the "
            "run's tokens and cost use the manifest's",
            outcome.job_name,
            *billed,
            *summed,
        )
    outcome.input_tokens, outcome.output_tokens = billed[0], billed[1]


@frozen_heap()
def collect_job(
    *,
    s3: Any,
    warehouse: Warehouse,
    job: StagedJob,
    job_info: dict[str, Any] | None,
    family: ModelFamily,
    run_id: str,
    prompt_version: str,
    model_id: str,
    max_attempts: int,
    owner: dict[str, str],
) -> JobOutcome:
    """Load what the job produced and queue the rest; returns the job's counts."""
    job_arn = job_info.get("jobArn") if job_info else None
    status = str(job_info.get("status")) if job_info else "NotSubmitted"
    outcome = JobOutcome(job_name=job.job_name, job_arn=job_arn, status=status, records=job.records)
    record_map = read_record_map(s3, job.map_s3_uri, owner=owner)
    if not job_arn:
        # Bedrock never saw these records: carried over with no error row, so no attempt is spent (a
        # few nights of a broken role or quota would otherwise dead-letter records never sent).
        keys = [key for key, _ in record_map.values()]
        outcome.not_processed = len(keys)
        outcome.retry = warehouse.carry_over(keys, run_id=run_id, prompt_version=prompt_version)
        log.warning("Job %s was never submitted: its %d records are carried over", job.job_name, len(keys))
        return outcome
    collector = JobCollector(
        s3=s3, job=job, family=family, outcome=outcome, record_map=record_map, owner=owner
    )
    reason = str((job_info or {}).get("message") or f"job ended {status}")[:2000]
    code = f"job_{status.lower()}"
    if status == "Completed":
        # A completed job processed every record: one missing here had an unreadable or no output line.
        code, reason = OUTPUT_MISSING, "the job completed but no readable output line has this record"

    def errors() -> Iterator[ErrorRow]:
        # Evaluated after the summaries are consumed: by then the collector has seen every line.
        yield from (error for error in collector.errors if error is not None)
        yield from collector.unprocessed(code=code, message=reason)

    counts = warehouse.load_job(
        collector.summaries(job_arn) if job_arn else iter(()),
        errors(),
        run_id=run_id,
        job_arn=job_arn,
        prompt_version=prompt_version,
        model_id=model_id,
        max_attempts=max_attempts,
    )
    outcome.retry = counts["retry"]
    outcome.dead_lettered = counts["dead_lettered"]
    if collector.manifest is not None:
        # A record whose line names it but cannot be read was processed too, as the manifest counts.
        processed = collector.seen | (collector.unreadable.keys() & record_map.keys())
        check = reconcile(set(record_map), processed, collector.manifest)
        outcome.manifest_problem = check.manifest_mismatch
        if check.manifest_mismatch:
            log.warning(
                "Job %s output does not match its manifest: %s", job.job_name, check.manifest_mismatch
            )
        else:
            _bill_from_manifest(outcome, collector.manifest)
    elif collector.manifest_error is not None:
        outcome.manifest_problem = collector.manifest_error
    elif job_arn and status in {"Completed", "PartiallyCompleted"}:
        outcome.manifest_problem = "manifest.json.out is missing"
        log.warning("Job %s has no manifest.json.out", job.job_name)
    log.info(
        "Collected job %s (%s): %d records, %d summarized, %d model errors, %d not processed, "
        "%d unreadable outputs, %d quarantined lines, %d retry, %d dead-lettered",
        job.job_name,
        status,
        outcome.records,
        outcome.summarized,
        outcome.model_errors,
        outcome.not_processed,
        outcome.output_unreadable,
        outcome.quarantined,
        outcome.retry,
        outcome.dead_lettered,
    )
    return outcome
