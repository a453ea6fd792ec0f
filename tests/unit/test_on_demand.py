"""On-demand invocation: bounded, jittered retries of throttling, and one row per record whatever happens.

The bedrock-runtime client is replaced by a small scripted stand-in (the part under test is the
retry loop and the row building, not boto3); the stand-in server's runtime is exercised by the
pipeline integration tests.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bedrock_batch.models import AnthropicClaude, Converse
from bedrock_batch.on_demand import MAX_DELAY, MAX_TRIES, OnDemandRecord, invoke_one, run_on_demand

MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


def client_error(code: str, status: int) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": f"{code} happened"},
            "ResponseMetadata": {"HTTPStatusCode": status},
        },
        "InvokeModel",
    )


THROTTLED = client_error("ThrottlingException", 429)
INVALID = client_error("ValidationException", 400)


def claude_body(text: str = "Summary: fine.") -> dict[str, Any]:
    return {
        "content": [{"type": "text", "text": text}],
        "usage": {"input_tokens": 12, "output_tokens": 3},
        "stop_reason": "end_turn",
    }


class ScriptedRuntime:
    """Answers each record's calls from a script: an exception to raise or a body to return, in order."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = {key: list(steps) for key, steps in script.items()}
        self.calls: list[dict[str, Any]] = []

    def _next(self, record_id: str) -> Any:
        step = self.script[record_id].pop(0) if len(self.script[record_id]) > 1 else self.script[record_id][0]
        if isinstance(step, Exception):
            raise step
        return step

    def invoke_model(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        body = json.loads(kwargs["body"])
        return {
            "body": io.BytesIO(json.dumps(self._next(body["messages"][0]["content"][0]["text"])).encode())
        }

    def converse(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(kwargs)
        return {**self._next(kwargs["messages"][0]["content"][0]["text"]), "ResponseMetadata": {}}


def record(name: str, attempt: int = 1) -> OnDemandRecord:
    body = AnthropicClaude().build_input(system=None, prompt=name, params={"max_tokens": 50})
    return OnDemandRecord(record_id=f"R{name}", source_key=f"key-{name}", attempt=attempt, model_input=body)


def sleeps() -> tuple[list[float], Callable[[float], None]]:
    slept: list[float] = []
    return slept, slept.append


def test_throttling_is_retried_with_growing_jittered_pauses_until_it_succeeds():
    runtime = ScriptedRuntime({"a": [THROTTLED, THROTTLED, claude_body()]})
    slept, sleep = sleeps()
    body = invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert body["content"][0]["text"] == "Summary: fine."
    assert len(runtime.calls) == 3
    assert len(slept) == 2
    assert 0.25 <= slept[0] <= 0.5 and 0.5 <= slept[1] <= 1.0


def test_throttling_gives_up_after_max_tries_with_pauses_under_the_ceiling():
    runtime = ScriptedRuntime({"a": [THROTTLED]})
    slept, sleep = sleeps()
    with pytest.raises(ClientError, match="ThrottlingException"):
        invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert len(runtime.calls) == MAX_TRIES
    assert len(slept) == MAX_TRIES - 1
    assert all(pause <= MAX_DELAY for pause in slept)


def test_an_input_error_is_raised_at_once_without_retrying():
    runtime = ScriptedRuntime({"a": [INVALID]})
    slept, sleep = sleeps()
    with pytest.raises(ClientError, match="ValidationException"):
        invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert (len(runtime.calls), slept) == (1, [])


def test_converse_records_go_through_the_converse_call():
    runtime = ScriptedRuntime({"a": [{"output": {"message": {"content": [{"text": "Summary."}]}}}]})
    converse_input = Converse().build_input(system=None, prompt="a", params={"max_tokens": 50})
    item = OnDemandRecord("Ra", "key-a", 1, converse_input)
    body = invoke_one(runtime, item, model_id=MODEL, invocation_type="Converse")
    assert body == {"output": {"message": {"content": [{"text": "Summary."}]}}}
    assert runtime.calls[0]["modelId"] == MODEL


def test_every_record_becomes_a_summary_or_an_error_row():
    runtime = ScriptedRuntime(
        {
            "ok": [claude_body("Summary: ok.")],
            "bad": [INVALID],
            "garbled": [{"content": "not a list"}],
        }
    )
    summaries, errors = run_on_demand(
        runtime=runtime,
        records=[record("ok"), record("bad", attempt=2), record("garbled")],
        family=AnthropicClaude(),
        model_id=MODEL,
        invocation_type="InvokeModel",
        concurrency=2,
    )
    assert [(row.source_key, row.summary, row.input_tokens, row.output_tokens) for row in summaries] == [
        ("key-ok", "Summary: ok.", 12, 3)
    ]
    by_key = {row.source_key: row for row in errors}
    assert set(by_key) == {"key-bad", "key-garbled"}
    bad = by_key["key-bad"]
    assert (bad.stage, bad.code, bad.retryable, bad.attempt) == ("model", "400", False, 2)
    assert "ValidationException" in bad.message
    assert "content" in by_key["key-garbled"].message  # names the field that did not parse


def test_a_response_with_no_text_is_an_error_row_naming_the_stop_reason_not_a_summary():
    empty = {**claude_body(""), "stop_reason": "max_tokens"}
    summaries, errors = run_on_demand(
        runtime=ScriptedRuntime({"empty": [empty]}),
        records=[record("empty")],
        family=AnthropicClaude(),
        model_id=MODEL,
        invocation_type="InvokeModel",
        concurrency=1,
    )
    assert summaries == []
    (error,) = errors
    assert "the model returned no text (stop reason max_tokens)" in error.message
