"""Run a small batch through bedrock-runtime when it is under a batch job's minimum.

Records are read back from the JSONL that ``prepare`` staged, invoked with bounded concurrency, and
loaded exactly like a batch job's output, a few answers at a time as they come; a retry or a clear
of the task calls only the records this run has no row for (``SmallBatchLoader``). Throttling is
retried with jittered backoff in a bounded loop here (the client itself does not retry:
``RUNTIME_CLIENT_CONFIG``); a record that still fails is queued for a retry. A read timeout is not
retried in the loop: the model may have generated (and billed) the answer, so the record waits for
the next run instead of being called again at once.

A refusal that is about the request, not the record (access denied, no such model, a model id that
on-demand throughput does not serve, no credentials) stops the batch: the records not answered are
returned as not invoked, to be carried over without spending an attempt. A connection that could not
be made is retried in the loop like throttling (the request never reached Bedrock); one that broke
after the request went out is not called again at once, like a read timeout. Either way a record
that still fails is queued for the next run.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import Any

from bedrock_batch.collect import MODEL_STAGE, OUTPUT_STAGE, OUTPUT_UNREADABLE, is_retryable
from bedrock_batch.errors import OutputParseError
from bedrock_batch.models import ModelFamily, no_text_reason
from bedrock_batch.s3paths import iter_lines, split_s3_uri
from bedrock_batch.warehouse import ErrorRow, LoadedResults, SummaryRow, Warehouse

log = logging.getLogger(__name__)

MAX_TRIES = 6
BASE_DELAY = 0.5
MAX_DELAY = 20.0

RUNTIME_CLIENT_CONFIG: dict[str, Any] = {
    "read_timeout": 3600,  # a long generation is not cut off (and billed again) after botocore's 60 s
    "connect_timeout": 10,
    "retries": {"mode": "standard", "total_max_attempts": 1},  # invoke_one's loop is the only retry
}
"""botocore ``Config`` arguments of the bedrock-runtime client the on-demand task uses."""

REFUSED_REQUEST_CODES = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "ResourceNotFoundException",
    }
)
REFUSED_MODEL_WORDS = (
    "model identifier",
    "on-demand throughput",
    "inference profile",
    "model that you provided",
)
"""Words of a ValidationException about the model id rather than the record."""
NO_CREDENTIALS_ERRORS = frozenset({"NoCredentialsError", "PartialCredentialsError"})
ANSWERS_PER_LOAD = 20
"""Answered records loaded at a time while a small batch runs: what is loaded is not called again."""


@dataclass(frozen=True)
class OnDemandRecord:
    record_id: str
    source_key: str
    attempt: int
    model_input: dict[str, Any]


def read_records(s3: Any, uri: str, owner: dict[str, str]) -> Iterator[OnDemandRecord]:
    import orjson

    bucket, key = split_s3_uri(uri)
    for line in iter_lines(s3, bucket, key, owner=owner):
        if line.strip():
            item = orjson.loads(line)
            yield OnDemandRecord(
                item["recordId"], item["map"]["k"], int(item["map"]["a"]), item["modelInput"]
            )


def read_since(small_batch: dict[str, Any]) -> datetime | None:
    """When prepare read the small batch's rows (``None`` for a plan from before it was recorded)."""
    value = small_batch.get("read_since")
    return datetime.fromisoformat(value) if value else None


def _error_code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code") or type(exc).__name__
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (str(status) if status else code), f"{code}: {exc}"[:2000]


def refused_request(exc: Exception) -> str | None:
    """Why ``exc`` refuses the request whatever the record (see the module docstring), else None."""
    code, message = _error_code(exc)
    name = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code") or type(exc).__name__
    if (
        name in REFUSED_REQUEST_CODES
        or code in ("401", "403", "404")
        or type(exc).__name__ in NO_CREDENTIALS_ERRORS
    ):
        return message
    if name == "ValidationException" and any(word in message.lower() for word in REFUSED_MODEL_WORDS):
        return message
    return None


def transient(exc: Exception) -> bool:
    """A network failure rather than an answer: worth another try (now or in the next run)."""
    from botocore.exceptions import ConnectionError, HTTPClientError

    return isinstance(exc, ConnectionError | HTTPClientError)


def _not_sent(exc: Exception) -> bool:
    """No connection was made, so the request never reached Bedrock: calling again cannot bill twice."""
    from botocore.exceptions import ConnectionError

    return isinstance(exc, ConnectionError)


def invoke_one(
    runtime: Any, record: OnDemandRecord, *, model_id: str, invocation_type: str, sleep: Any = time.sleep
) -> dict[str, Any]:
    """One InvokeModel (or Converse) call with bounded, jittered retries on throttling and on
    connections that could not be made; an answer that is not JSON is an ``OutputParseError``."""
    delay = BASE_DELAY
    for attempt in range(1, MAX_TRIES + 1):
        try:
            if invocation_type == "Converse":
                response = runtime.converse(modelId=model_id, **record.model_input)
                response.pop("ResponseMetadata", None)
                return response
            raw = runtime.invoke_model(
                modelId=model_id,
                body=json.dumps(record.model_input).encode(),
                contentType="application/json",
                accept="application/json",
            )["body"].read()
        except Exception as exc:
            code, _ = _error_code(exc)
            # A broken connection or a read timeout may come after the model answered (and billed).
            again = _not_sent(exc) or (is_retryable(code, str(exc)) and not transient(exc))
            if attempt == MAX_TRIES or not again:
                raise
            sleep(min(MAX_DELAY, delay) * random.uniform(0.5, 1.0))
            delay *= 2
            continue
        try:
            return json.loads(raw)
        except ValueError as exc:  # answered, and billed: not called again
            raise OutputParseError(f"the model's answer is not JSON: {exc}") from exc
    raise AssertionError("unreachable")


@dataclass
class OnDemandResult:
    """What a small batch came to: rows to load, and the records never answered."""

    summaries: list[SummaryRow] = field(default_factory=list)
    errors: list[ErrorRow] = field(default_factory=list)
    not_invoked: list[OnDemandRecord] = field(default_factory=list)
    """Records the model never answered because a request was refused (``refusal`` says why)."""
    refusal: str | None = None
    billed_input_tokens: int = 0
    billed_output_tokens: int = 0
    """Tokens of every answer, readable or not: all of them are billed."""


def run_on_demand(
    *,
    runtime: Any,
    records: list[OnDemandRecord],
    family: ModelFamily,
    model_id: str,
    invocation_type: str,
    concurrency: int,
    on_answers: Callable[[list[SummaryRow], list[ErrorRow]], None] | None = None,
    answers_per_load: int | None = None,
) -> OnDemandResult:
    """
    Invoke every record: each becomes a summary, an error row, or (after a refusal) not invoked.

    ``on_answers`` receives the new rows every ``answers_per_load`` (``ANSWERS_PER_LOAD``) answered
    records and once at the end, on this thread, so they are loaded while the calls go on; at most
    ``concurrency`` calls are made ahead of it. If it raises (or anything else does on this thread),
    no further call is made and the error propagates once the calls under way end.
    """
    result = OnDemandResult()
    refused = threading.Event()
    stopped = threading.Event()
    lock = threading.Lock()  # the calls run on a pool: the result's counters and refusal are shared

    def call(record: OnDemandRecord) -> tuple[OnDemandRecord, Any, Exception | None]:
        if refused.is_set() or stopped.is_set():
            return record, None, None  # not invoked: the request is refused whatever the record
        try:
            body = invoke_one(runtime, record, model_id=model_id, invocation_type=invocation_type)
        except Exception as exc:
            why = refused_request(exc)
            if why is None:
                return record, None, exc
            with lock:
                if not refused.is_set():
                    refused.set()
                    result.refusal = why
            return record, None, None
        try:
            output = family.parse_output(body)
        except Exception as exc:  # a body that does not parse is this record's error, not the batch's
            return record, None, exc
        with lock:
            result.billed_input_tokens += output.input_tokens or 0
            result.billed_output_tokens += output.output_tokens or 0
        empty = no_text_reason(output)
        return record, output, None if empty is None else OutputParseError(empty)

    workers = max(1, concurrency)
    per_load = answers_per_load or ANSWERS_PER_LOAD
    handed = (0, 0)  # summaries and errors already given to on_answers
    not_sent = iter(records)
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        # A record is handed to the pool only when one is done: while this thread loads, at most
        # ``workers`` calls go on, so a load that fails (slowly, as a lost database does) loses at
        # most those answers and the ones it was loading, not the whole batch's.
        in_flight = {pool.submit(call, record) for record in islice(not_sent, workers)}
        try:
            while in_flight:
                finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in finished:
                    _add_outcome(result, *future.result())
                    done += 1
                    if done % 50 == 0 or done == len(records):
                        log.info(
                            "On demand: %d/%d records done (%d errors, %d not invoked)",
                            done,
                            len(records),
                            len(result.errors),
                            len(result.not_invoked),
                        )
                    following = next(not_sent, None)
                    if following is not None:
                        in_flight.add(pool.submit(call, following))
                answered = len(result.summaries) - handed[0] + len(result.errors) - handed[1]
                if on_answers is not None and answered and (answered >= per_load or not in_flight):
                    on_answers(result.summaries[handed[0] :], result.errors[handed[1] :])
                    handed = (len(result.summaries), len(result.errors))
        except BaseException:
            stopped.set()  # calls not yet under way return not invoked; the pool's exit awaits the rest
            raise
    return result


def _add_outcome(result: OnDemandResult, record: OnDemandRecord, output: Any, exc: Exception | None) -> None:
    """File one record's call under the result: a summary, an error row, or not invoked."""
    if exc is None and output is None:
        result.not_invoked.append(record)
    elif exc is None:
        result.summaries.append(
            SummaryRow(
                record.source_key, output.text, output.input_tokens, output.output_tokens, output.stop_reason
            )
        )
    elif isinstance(exc, OutputParseError):  # answered, but with nothing to keep: as in a batch
        result.errors.append(
            ErrorRow(record.source_key, OUTPUT_STAGE, OUTPUT_UNREADABLE, str(exc), False, record.attempt)
        )
    else:
        code, message = _error_code(exc)
        retryable = is_retryable(code, message) or transient(exc)
        result.errors.append(
            ErrorRow(record.source_key, MODEL_STAGE, code, message, retryable, record.attempt)
        )


class SmallBatchLoader:
    """
    Loads a small batch's answers as they come (``run_on_demand``'s ``on_answers``), and what an
    earlier try of the run loaded is not called again.

    A try that dies between its calls and its load (the worker killed, the warehouse gone) would
    otherwise bill its answered records twice when retried; now only the answers not yet loaded
    (``ANSWERS_PER_LOAD`` plus up to twice the concurrency) are called again, and none that another
    run took since this one read them (a refused batch's carried-over records, say). Records Bedrock
    never answered (a refused request) are queued with no error row, so no attempt is spent, as for a
    job never submitted; the counts say how many (``carried_over``) and the report fails the run.
    """

    def __init__(
        self, warehouse: Warehouse, *, run_id: str, prompt_version: str, model_id: str, max_attempts: int
    ) -> None:
        self.warehouse = warehouse
        self.run_id = run_id
        self.prompt_version = prompt_version
        self.model_id = model_id
        self.max_attempts = max_attempts
        self.counts = {"summarized": 0, "errored": 0, "retry": 0, "dead_lettered": 0}
        self.earlier = LoadedResults()
        self.elsewhere: set[str] = set()

    def still_to_call(
        self, records: list[OnDemandRecord], *, read_since: datetime | None = None
    ) -> list[OnDemandRecord]:
        """
        ``records`` without those an earlier try of this run loaded (their rows count as this try's)
        and those another run took since this run read them (``Warehouse.take_keys_to_call``).
        """
        earlier, elsewhere = self.warehouse.take_keys_to_call(
            [record.source_key for record in records],
            run_id=self.run_id,
            prompt_version=self.prompt_version,
            read_since=read_since,
        )
        self.earlier, self.elsewhere = earlier, elsewhere
        if earlier:
            log.info(
                "On demand: %d of %d records were loaded by an earlier try of run %s: not called again",
                len(earlier),
                len(records),
                self.run_id,
            )
        if elsewhere:
            log.warning(
                "On demand: %d of %d records were taken by another run since run %s read them (e.g. %s): "
                "not called here",
                len(elsewhere),
                len(records),
                self.run_id,
                ", ".join(sorted(elsewhere)[:5]),
            )
        return [r for r in records if r.source_key not in earlier and r.source_key not in elsewhere]

    def let_go(self, keys: Iterable[str]) -> None:
        """Release this run's claims on ``keys`` after a failed try; a warehouse that fails here too is
        logged (the claims then lapse after the claim TTL)."""
        try:
            self.warehouse.let_go(keys, run_id=self.run_id, prompt_version=self.prompt_version)
        except Exception as exc:
            log.warning(
                "On demand: could not let go of run %s's claims on its unloaded records (%s); "
                "other runs take them once the claims expire",
                self.run_id,
                exc,
            )

    def load(self, summaries: list[SummaryRow], errors: list[ErrorRow]) -> None:
        counts = self.warehouse.load_job(
            summaries,
            errors,
            run_id=self.run_id,
            job_arn=None,
            prompt_version=self.prompt_version,
            model_id=self.model_id,
            max_attempts=self.max_attempts,
        )
        for name in self.counts:
            self.counts[name] += counts[name]

    def finish(self, result: OnDemandResult) -> dict[str, int]:
        """Queue the records never answered; the counts of this try, and ``earlier_*`` of earlier ones."""
        keys = [record.source_key for record in result.not_invoked]
        carried = (
            self.warehouse.carry_over(keys, run_id=self.run_id, prompt_version=self.prompt_version)
            if keys
            else 0
        )
        if keys:
            log.error(
                "Bedrock refused the on-demand requests (%s): %d records not invoked are carried over to "
                "the next run without spending an attempt",
                result.refusal,
                len(keys),
            )
        earlier = self.earlier
        return {
            **self.counts,
            "carried_over": carried,
            "taken_elsewhere": len(self.elsewhere),
            "earlier_loaded": len(earlier),
            "earlier_summarized": len(earlier.summaries),
            "earlier_errored": len(earlier.errors),
            "earlier_retry": sum(retryable and not dead for retryable, dead in earlier.errors.values()),
            "earlier_dead_lettered": sum(dead for _, dead in earlier.errors.values()),
            "earlier_input_tokens": sum(tokens for tokens, _ in earlier.summaries.values()),
            "earlier_output_tokens": sum(tokens for _, tokens in earlier.summaries.values()),
        }


def summarize_small_batch(
    warehouse: Warehouse,
    records: list[OnDemandRecord],
    *,
    runtime: Any,
    family: ModelFamily,
    model_id: str,
    invocation_type: str,
    concurrency: int,
    run_id: str,
    prompt_version: str,
    max_attempts: int,
    read_since: datetime | None = None,
) -> tuple[OnDemandResult, dict[str, int]]:
    """
    What the on-demand task does: call the records an earlier try did not load, loading as they come.

    If that fails, this run lets go of its claims on the records it was to call (as far as the
    warehouse answers), so a later run may take them instead of waiting out the claim's TTL; a retry
    of this task claims again those no other run took meanwhile.
    """
    loader = SmallBatchLoader(
        warehouse, run_id=run_id, prompt_version=prompt_version, model_id=model_id, max_attempts=max_attempts
    )
    to_call = loader.still_to_call(records, read_since=read_since)
    try:
        result = run_on_demand(
            runtime=runtime,
            records=to_call,
            family=family,
            model_id=model_id,
            invocation_type=invocation_type,
            concurrency=concurrency,
            on_answers=loader.load,
        )
        return result, loader.finish(result)
    except BaseException:
        loader.let_go(record.source_key for record in to_call)
        raise


def on_demand_task_outcome(records: int, result: OnDemandResult, counts: dict[str, int]) -> dict[str, Any]:
    """The on-demand task's outcome for the report: this try's answers plus what earlier tries loaded."""
    return {
        "job_name": "on-demand",
        "status": "OnDemand",
        "records": records,
        "earlier_loaded": counts["earlier_loaded"],
        "taken_elsewhere": counts["taken_elsewhere"],
        "summarized": len(result.summaries) + counts["earlier_summarized"],
        "model_errors": len(result.errors) + counts["earlier_errored"],
        "input_tokens": result.billed_input_tokens + counts["earlier_input_tokens"],
        "output_tokens": result.billed_output_tokens + counts["earlier_output_tokens"],
        "retry": counts["retry"] + counts["earlier_retry"],
        "dead_lettered": counts["dead_lettered"] + counts["earlier_dead_lettered"],
        "refused": counts["carried_over"],
        "refusal": result.refusal,
    }
