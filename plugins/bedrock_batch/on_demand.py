"""Run a small batch through bedrock-runtime when it is under a batch job's minimum.

Records are read back from the JSONL that ``prepare`` staged, invoked with bounded concurrency, and
loaded exactly like a batch job's output. Throttling is retried with jittered backoff (botocore's
adaptive mode first, then a bounded loop here); a record that still fails is queued for a retry.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from bedrock_batch.collect import MODEL_STAGE, is_retryable
from bedrock_batch.errors import OutputParseError
from bedrock_batch.models import ModelFamily, ModelOutput, no_text_reason
from bedrock_batch.s3paths import iter_lines, split_s3_uri
from bedrock_batch.warehouse import ErrorRow, SummaryRow

log = logging.getLogger(__name__)

MAX_TRIES = 6
BASE_DELAY = 0.5
MAX_DELAY = 20.0


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


def _error_code(exc: Exception) -> tuple[str, str]:
    response = getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code") or type(exc).__name__
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return (str(status) if status else code), f"{code}: {exc}"[:2000]


def invoke_one(
    runtime: Any, record: OnDemandRecord, *, model_id: str, invocation_type: str, sleep: Any = time.sleep
) -> dict[str, Any]:
    """One InvokeModel (or Converse) call with bounded, jittered retries on throttling."""
    delay = BASE_DELAY
    for attempt in range(1, MAX_TRIES + 1):
        try:
            if invocation_type == "Converse":
                response = runtime.converse(modelId=model_id, **record.model_input)
                response.pop("ResponseMetadata", None)
                return response
            response = runtime.invoke_model(
                modelId=model_id,
                body=json.dumps(record.model_input).encode(),
                contentType="application/json",
                accept="application/json",
            )
            return json.loads(response["body"].read())
        except Exception as exc:
            code, _ = _error_code(exc)
            if attempt == MAX_TRIES or not is_retryable(code, str(exc)):
                raise
            sleep(min(MAX_DELAY, delay) * random.uniform(0.5, 1.0))
            delay *= 2
    raise AssertionError("unreachable")


def run_on_demand(
    *,
    runtime: Any,
    records: list[OnDemandRecord],
    family: ModelFamily,
    model_id: str,
    invocation_type: str,
    concurrency: int,
) -> tuple[list[SummaryRow], list[ErrorRow]]:
    """Invoke every record; return the rows to load (a summary or an error for each)."""
    summaries: list[SummaryRow] = []
    errors: list[ErrorRow] = []

    def call(record: OnDemandRecord) -> tuple[OnDemandRecord, ModelOutput | None, Exception | None]:
        try:
            body = invoke_one(runtime, record, model_id=model_id, invocation_type=invocation_type)
            # Parsed here: a body that does not parse is this record's error, not the whole batch's.
            output = family.parse_output(body)
            empty = no_text_reason(output)
            if empty is not None:
                raise OutputParseError(empty)
            return record, output, None
        except Exception as exc:
            return record, None, exc

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        for done, (record, output, exc) in enumerate(pool.map(call, records), start=1):
            if output is not None:
                summaries.append(
                    SummaryRow(
                        record.source_key,
                        output.text,
                        output.input_tokens,
                        output.output_tokens,
                        output.stop_reason,
                    )
                )
            else:
                assert exc is not None
                code, message = _error_code(exc)
                errors.append(
                    ErrorRow(
                        record.source_key,
                        MODEL_STAGE,
                        code,
                        message,
                        is_retryable(code, message),
                        record.attempt,
                    )
                )
            if done % 50 == 0 or done == len(records):
                log.info("On demand: %d/%d records done (%d errors)", done, len(records), len(errors))
    return summaries, errors
