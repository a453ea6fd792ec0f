"""On-demand invocation: bounded, jittered retries of throttling, and one row per record whatever happens.

The bedrock-runtime client is replaced by a small scripted stand-in (the part under test is the
retry loop and the row building, not boto3); the stand-in server's runtime is exercised by the
pipeline integration tests.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bedrock_batch import on_demand
from bedrock_batch.models import AnthropicClaude, Converse
from bedrock_batch.on_demand import (
    MAX_DELAY,
    MAX_TRIES,
    RUNTIME_CLIENT_CONFIG,
    OnDemandRecord,
    OnDemandResult,
    invoke_one,
    on_demand_task_outcome,
    refused_request,
    run_on_demand,
    summarize_small_batch,
)
from bedrock_batch.warehouse import LoadedResults

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


def run(runtime: Any, records: list[OnDemandRecord], concurrency: int = 1, **kwargs: Any) -> OnDemandResult:
    return run_on_demand(
        runtime=runtime,
        records=records,
        family=AnthropicClaude(),
        model_id=MODEL,
        invocation_type="InvokeModel",
        concurrency=concurrency,
        **kwargs,
    )


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


def test_throttling_gives_up_after_max_tries():
    runtime = ScriptedRuntime({"a": [THROTTLED]})
    slept, sleep = sleeps()
    with pytest.raises(ClientError, match="ThrottlingException"):
        invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert len(runtime.calls) == MAX_TRIES
    assert len(slept) == MAX_TRIES - 1


def test_throttling_pauses_stop_growing_at_the_ceiling(monkeypatch):
    monkeypatch.setattr(on_demand, "MAX_TRIES", 10)  # enough doublings to pass the ceiling
    runtime = ScriptedRuntime({"a": [THROTTLED]})
    slept, sleep = sleeps()
    with pytest.raises(ClientError, match="ThrottlingException"):
        invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert len(slept) == 9
    assert all(MAX_DELAY / 2 <= pause <= MAX_DELAY for pause in slept[-3:])


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
    result = run(runtime, [record("ok"), record("bad", attempt=2), record("garbled")], concurrency=2)
    assert [
        (row.source_key, row.summary, row.input_tokens, row.output_tokens) for row in result.summaries
    ] == [("key-ok", "Summary: ok.", 12, 3)]
    assert result.not_invoked == [] and result.refusal is None
    by_key = {row.source_key: row for row in result.errors}
    assert set(by_key) == {"key-bad", "key-garbled"}
    bad = by_key["key-bad"]
    assert (bad.stage, bad.code, bad.retryable, bad.attempt) == ("model", "400", False, 2)
    assert "ValidationException" in bad.message
    assert "content" in by_key["key-garbled"].message  # names the field that did not parse


def test_answers_are_handed_over_for_loading_a_few_at_a_time_while_the_calls_go_on():
    names = ["a", "b", "bad", "d", "e"]
    runtime = ScriptedRuntime({name: [INVALID if name == "bad" else claude_body()] for name in names})
    handed: list[tuple[list[str], list[str]]] = []

    result = run(
        runtime,
        [record(name) for name in names],
        on_answers=lambda summaries, errors: handed.append(
            ([row.source_key for row in summaries], [row.source_key for row in errors])
        ),
        answers_per_load=2,
    )

    assert handed == [(["key-a", "key-b"], []), (["key-d"], ["key-bad"]), (["key-e"], [])]
    assert len(result.summaries) == 4 and len(result.errors) == 1  # the result still holds every row


def test_a_load_that_fails_stops_the_calls_not_yet_made_and_raises():
    names = [f"r{i}" for i in range(10)]
    runtime = ScriptedRuntime({name: [claude_body()] for name in names})

    def warehouse_gone(summaries: list[Any], errors: list[Any]) -> None:
        raise ConnectionError("the warehouse went away")

    with pytest.raises(ConnectionError, match="warehouse went away"):
        run(runtime, [record(name) for name in names], 1, on_answers=warehouse_gone, answers_per_load=2)

    assert len(runtime.calls) <= 3  # the two answers handed over, and at most the one call under way


def test_the_task_outcome_counts_what_an_earlier_try_loaded_with_what_this_one_did():
    result = run(ScriptedRuntime({"a": [claude_body()], "bad": [INVALID]}), [record("a"), record("bad")])
    counts = {
        "retry": 0,
        "dead_lettered": 0,
        "carried_over": 0,
        "taken_elsewhere": 1,
        "earlier_loaded": 3,
        "earlier_summarized": 2,
        "earlier_errored": 1,
        "earlier_retry": 1,
        "earlier_dead_lettered": 0,
        "earlier_input_tokens": 100,
        "earlier_output_tokens": 10,
    }

    outcome = on_demand_task_outcome(5, result, counts)

    assert (outcome["records"], outcome["earlier_loaded"], outcome["taken_elsewhere"]) == (5, 3, 1)
    assert (outcome["summarized"], outcome["model_errors"], outcome["retry"]) == (3, 2, 1)
    assert (outcome["input_tokens"], outcome["output_tokens"]) == (112, 13)


def test_while_a_load_is_slow_to_fail_no_more_than_the_pools_calls_go_on():
    names = [f"r{i}" for i in range(100)]

    class SlowRuntime(ScriptedRuntime):
        def invoke_model(self, **kwargs: Any) -> dict[str, Any]:
            time.sleep(0.005)
            return super().invoke_model(**kwargs)

    runtime = SlowRuntime({name: [claude_body()] for name in names})

    def database_gone_after_a_wait(summaries: list[Any], errors: list[Any]) -> None:
        # A connect timeout: meanwhile the pool must not call on. The wait ends early once more calls
        # than the bound have gone (they would all go, 100 in ~0.13 s, if the pool called on), so a
        # slow machine cannot hide that by calling too slowly within a fixed wait.
        deadline = time.monotonic() + 1.5
        while len(runtime.calls) <= 20 + 3 + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        raise ConnectionError("the warehouse went away")

    with pytest.raises(ConnectionError):
        run(runtime, [record(name) for name in names], 4, on_answers=database_gone_after_a_wait)

    # The 20 answers handed over, at most 3 more read with them, and the 4 calls under way.
    assert len(runtime.calls) <= 20 + 3 + 4


class LostWarehouse:
    """A warehouse that answers the claims but is gone by the first load."""

    def __init__(self) -> None:
        self.let_go_keys: list[str] = []

    def take_keys_to_call(self, keys: Any, **_: Any) -> tuple[LoadedResults, set[str]]:
        return LoadedResults(), set()

    def load_job(self, *args: Any, **kwargs: Any) -> dict[str, int]:
        raise ConnectionError("the warehouse went away")

    def let_go(self, keys: Any, **_: Any) -> None:
        self.let_go_keys.extend(keys)


def test_a_failed_small_batch_lets_go_of_the_runs_claims_on_its_records():
    names = ["a", "b", "c"]
    warehouse = LostWarehouse()

    with pytest.raises(ConnectionError):
        summarize_small_batch(
            warehouse,  # type: ignore[arg-type]
            [record(name) for name in names],
            runtime=ScriptedRuntime({name: [claude_body()] for name in names}),
            family=AnthropicClaude(),
            model_id=MODEL,
            invocation_type="InvokeModel",
            concurrency=1,
            run_id="run-1",
            prompt_version="v1",
            max_attempts=3,
        )

    assert sorted(warehouse.let_go_keys) == ["key-a", "key-b", "key-c"]  # a later run may take them


def test_a_response_with_no_text_is_an_error_row_naming_the_stop_reason_not_a_summary():
    empty = {**claude_body(""), "stop_reason": "max_tokens"}
    result = run(ScriptedRuntime({"empty": [empty]}), [record("empty")])
    assert result.summaries == []
    (error,) = result.errors
    assert "the model returned no text (stop reason max_tokens)" in error.message
    assert (error.stage, error.code, error.retryable) == (
        "output",
        "output_unreadable",
        False,
    )  # as in a batch
    assert (result.billed_input_tokens, result.billed_output_tokens) == (12, 3)  # billed all the same


def test_a_refused_request_stops_the_batch_and_leaves_its_records_not_invoked():
    denied = client_error("AccessDeniedException", 403)
    names = [f"r{i}" for i in range(20)]
    runtime = ScriptedRuntime({name: [denied] for name in names})
    result = run(runtime, [record(name) for name in names])
    assert result.summaries == [] and result.errors == []  # no attempt is spent on any of them
    assert sorted(item.source_key for item in result.not_invoked) == sorted(f"key-{name}" for name in names)
    assert "AccessDeniedException" in result.refusal
    assert len(runtime.calls) < len(names)  # the rest were never sent


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("ResourceNotFoundException", 404, "Model not found"),
        ("ValidationException", 400, "Invocation of model ID x with on-demand throughput isn't supported"),
        ("ValidationException", 400, "The provided model identifier is invalid."),
        ("UnrecognizedClientException", 403, "The security token included in the request is invalid"),
    ],
)
def test_refusals_about_the_request_rather_than_the_record(code, status, message):
    error = ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "InvokeModel",
    )
    assert refused_request(error) is not None


def test_missing_credentials_are_a_refusal_and_input_or_network_errors_are_not():
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError

    assert refused_request(NoCredentialsError()) is not None
    assert refused_request(EndpointConnectionError(endpoint_url="https://bedrock-runtime.example")) is None
    assert refused_request(INVALID) is None
    assert refused_request(THROTTLED) is None


def test_a_connection_that_could_not_be_made_is_tried_again_in_the_loop():
    from botocore.exceptions import EndpointConnectionError

    unreachable = EndpointConnectionError(endpoint_url="https://bedrock-runtime.example")
    runtime = ScriptedRuntime({"a": [unreachable, unreachable, claude_body()]})
    slept, sleep = sleeps()
    body = invoke_one(runtime, record("a"), model_id=MODEL, invocation_type="InvokeModel", sleep=sleep)
    assert body["content"][0]["text"] == "Summary: fine."
    assert (len(runtime.calls), len(slept)) == (3, 2)


def test_a_connection_that_broke_after_the_request_is_queued_not_called_again():
    from botocore.exceptions import ConnectionClosedError

    runtime = ScriptedRuntime({"a": [ConnectionClosedError(endpoint_url="https://bedrock-runtime.example")]})
    result = run(runtime, [record("a")])
    assert len(runtime.calls) == 1
    (error,) = result.errors
    assert error.retryable  # the next run tries it again
    assert result.not_invoked == []


def test_an_answer_that_is_not_json_is_output_unreadable_and_not_called_again():
    class Garbled(ScriptedRuntime):
        def invoke_model(self, **kwargs: Any) -> dict[str, Any]:
            self.calls.append(kwargs)
            return {"body": io.BytesIO(b"<html>not json")}

    runtime = Garbled({})
    result = run(runtime, [record("a")])
    assert len(runtime.calls) == 1
    (error,) = result.errors
    assert (error.stage, error.code, error.retryable) == ("output", "output_unreadable", False)
    assert "not JSON" in error.message


def test_a_read_timeout_is_not_called_again_at_once_but_queued_for_a_retry():
    from botocore.exceptions import ReadTimeoutError

    timeout = ReadTimeoutError(endpoint_url="https://bedrock-runtime.example")
    runtime = ScriptedRuntime({"slow": [timeout]})
    result = run(runtime, [record("slow")])
    assert len(runtime.calls) == 1  # the model may have generated (and billed) the answer
    (error,) = result.errors
    assert error.retryable


def test_the_runtime_client_waits_for_long_generations_and_leaves_retries_to_the_loop():
    assert RUNTIME_CLIENT_CONFIG["read_timeout"] >= 900
    assert RUNTIME_CLIENT_CONFIG["retries"]["total_max_attempts"] == 1
