"""bedrock-runtime InvokeModel and Converse, with the batch worker's model logic."""

from __future__ import annotations

import json
import time

import pytest

from tests.integration.local_aws.helpers import call_text, claude_input


@pytest.fixture
def runtime(local_aws_clean):
    return local_aws_clean.client("bedrock-runtime")


def _invoke(runtime, model_id, body):
    return json.loads(runtime.invoke_model(modelId=model_id, body=json.dumps(body))["body"].read())


def test_invoke_model_answers_claude_with_a_summary_of_the_prompt(runtime):
    out = _invoke(runtime, "us.anthropic.claude-3-haiku-20240307-v1:0", claude_input(call_text(7)))
    assert "invoice number 1007" in out["content"][0]["text"]
    assert out["stop_reason"] == "end_turn"


def test_invoke_model_answers_llama_in_its_shape(runtime):
    out = _invoke(runtime, "meta.llama3-1-8b-instruct-v1:0", {"prompt": call_text(3), "max_gen_len": 100})
    assert "invoice number 1003" in out["generation"]
    assert out["stop_reason"] == "stop"


def test_converse_answers_in_the_converse_shape(runtime):
    out = runtime.converse(
        modelId="amazon.nova-lite-v1:0",
        messages=[{"role": "user", "content": [{"text": call_text(5)}]}],
        inferenceConfig={"maxTokens": 100},
    )
    assert "invoice number 1005" in out["output"]["message"]["content"][0]["text"]
    assert out["usage"]["totalTokens"] == out["usage"]["inputTokens"] + out["usage"]["outputTokens"]
    assert out["stopReason"] == "end_turn"


def test_an_invalid_body_is_a_validation_error(runtime):
    with pytest.raises(runtime.exceptions.ValidationException, match=r"required key \[max_tokens\]"):
        _invoke(runtime, "anthropic.claude-3-haiku-20240307-v1:0", {"anthropic_version": "x", "messages": []})


def test_a_custom_model_is_not_called_on_demand(runtime):
    custom = (
        "arn:aws:bedrock:us-east-1:123456789012:custom-model/"
        "anthropic.claude-3-haiku-20240307-v1:0/a1b2c3d4e5f6"
    )
    with pytest.raises(runtime.exceptions.ValidationException, match="custom model deployment"):
        _invoke(runtime, custom, claude_input(call_text(1)))
    with pytest.raises(runtime.exceptions.ValidationException, match="custom model deployment"):
        runtime.converse(modelId=custom, messages=[{"role": "user", "content": [{"text": "hi"}]}])


def test_a_custom_model_deployment_answers_as_the_family_its_request_is_written_for(runtime):
    deployment = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3d4e5f6"
    claude = _invoke(runtime, deployment, claude_input(call_text(4)))
    assert "invoice number 1004" in claude["content"][0]["text"]
    llama = _invoke(runtime, deployment, {"prompt": call_text(6), "max_gen_len": 100})
    assert "invoice number 1006" in llama["generation"]
    templated = f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n{call_text(7)}<|eot_id|>"
    assert "invoice number 1007" in _invoke(runtime, deployment, {"prompt": templated})["generation"]
    mistral = _invoke(runtime, deployment, {"prompt": f"<s>[INST] {call_text(8)} [/INST]", "max_tokens": 100})
    assert "invoice number 1008" in mistral["outputs"][0]["text"]
    with pytest.raises(runtime.exceptions.ValidationException, match="model identifier is invalid"):
        _invoke(runtime, deployment, {"question": "no family's body"})


def test_requests_above_the_rate_are_throttled_until_a_second_has_passed(local_aws_clean, runtime):
    local_aws_clean.admin.set_faults(runtime_rps=2)
    body = {"messages": [{"role": "user", "content": [{"text": "a."}]}]}

    def answered() -> bool:
        try:
            _invoke(runtime, "amazon.nova-lite-v1:0", body)
        except runtime.exceptions.ThrottlingException:
            return False
        return True

    burst = [answered() for _ in range(10)]  # back to back: calls take ms, so most share a second
    assert burst[:2] == [True, True]
    assert not all(burst)
    time.sleep(1.1)  # the window is one second: the calls before the pause no longer count
    assert answered()
    assert local_aws_clean.calls()[-1] == "bedrock:InvokeModel"
