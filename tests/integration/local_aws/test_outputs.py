"""Output layout and the per-family record formats the worker writes."""

from __future__ import annotations

import pytest

from tests.integration.local_aws.helpers import call_text, jsonl, read_lines, records, run_job


def _nova(text):
    return {
        "messages": [{"role": "user", "content": [{"text": text}]}],
        "inferenceConfig": {"maxTokens": 200},
    }


def _llama(text):
    return {
        "prompt": f"<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n{text}<|eot_id|>",
        "max_gen_len": 200,
    }


def _mistral(text):
    return {"prompt": f"<s>[INST] {text} [/INST]", "max_tokens": 200}


def _titan(text):
    return {"inputText": text, "textGenerationConfig": {"maxTokenCount": 200}}


def _claude(text):
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 200,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def _claude_text(out):
    assert out["type"] == "message" and out["role"] == "assistant" and out["id"].startswith("msg_bdrk_")
    assert out["stop_reason"] == "end_turn"
    assert out["usage"]["input_tokens"] > 0 and out["usage"]["output_tokens"] > 0
    return out["content"][0]["text"]


def _nova_text(out):
    assert out["stopReason"] == "end_turn"
    usage = out["usage"]
    assert usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    return out["output"]["message"]["content"][0]["text"]


def _llama_text(out):
    assert (
        out["stop_reason"] == "stop" and out["prompt_token_count"] > 0 and out["generation_token_count"] > 0
    )
    return out["generation"]


def _mistral_text(out):
    assert out["outputs"][0]["stop_reason"] == "stop"
    return out["outputs"][0]["text"]


def _titan_text(out):
    result = out["results"][0]
    assert result["completionReason"] == "FINISH" and out["inputTextTokenCount"] > 0
    return result["outputText"]


FAMILIES = [
    ("anthropic.claude-3-haiku-20240307-v1:0", _claude, _claude_text),
    ("us.anthropic.claude-3-5-sonnet-20240620-v1:0", _claude, _claude_text),
    ("amazon.nova-lite-v1:0", _nova, _nova_text),
    ("eu.amazon.nova-micro-v1:0", _nova, _nova_text),
    ("meta.llama3-1-8b-instruct-v1:0", _llama, _llama_text),
    (
        "arn:aws:bedrock:us-east-1:123456789012:custom-model/meta.llama3-1-8b-instruct-v1:0:128k/a1b2c3d4e5f6",
        _llama,
        _llama_text,
    ),
    ("mistral.mistral-large-2402-v1:0", _mistral, _mistral_text),
    ("amazon.titan-text-express-v1", _titan, _titan_text),
]


@pytest.mark.parametrize(("model_id", "make_input", "text_of"), FAMILIES, ids=[f[0] for f in FAMILIES])
def test_each_family_gets_its_own_response_shape(local_aws_clean, model_id, make_input, text_of):
    job, out = run_job(
        local_aws_clean, files={"part-00001.jsonl": jsonl(records(100, make_input))}, model_id=model_id
    )
    assert job["status"] == "Completed"
    lines = read_lines(local_aws_clean.client("s3"), out, "part-00001.jsonl.out")
    assert len(lines) == 100
    for line in lines:
        assert set(line) == {"recordId", "modelInput", "modelOutput"}
        number = int(line["recordId"].removeprefix("CALL"))
        assert f"invoice number {1000 + number}." in text_of(line["modelOutput"])


def test_converse_jobs_get_the_converse_shape(local_aws_clean):
    job, out = run_job(
        local_aws_clean,
        files={"a.jsonl": jsonl(records(100, _nova))},
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        modelInvocationType="Converse",
    )
    assert job["modelInvocationType"] == "Converse"
    line = read_lines(local_aws_clean.client("s3"), out, "a.jsonl.out")[0]
    assert set(line["modelOutput"]) == {"output", "stopReason", "usage", "metrics"}
    assert line["modelOutput"]["output"]["message"]["role"] == "assistant"


def test_each_input_file_gets_an_out_file_and_a_manifest(local_aws_clean):
    files = {"part-00001.jsonl": jsonl(records(60)), "part-00002.jsonl": jsonl(records(50, start=60))}
    _, out = run_job(local_aws_clean, files=files)
    s3 = local_aws_clean.client("s3")
    bucket, _, prefix = out.removeprefix("s3://").partition("/")
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")["Contents"])
    assert keys == [
        f"{prefix}/manifest.json.out",
        f"{prefix}/part-00001.jsonl.out",
        f"{prefix}/part-00002.jsonl.out",
    ]
    assert len(read_lines(s3, out, "part-00002.jsonl.out")) == 50
    [manifest] = read_lines(s3, out, "manifest.json.out")
    assert (
        manifest["totalRecordCount"]
        == manifest["processedRecordCount"]
        == manifest["successRecordCount"]
        == 110
    )
    assert manifest["errorRecordCount"] == 0
    assert manifest["inputTokenCount"] > 0 and manifest["outputTokenCount"] > 0


def test_output_order_is_shuffled(local_aws_clean):
    _, out = run_job(local_aws_clean, 120)
    ids = [line["recordId"] for line in read_lines(local_aws_clean.client("s3"), out, "part-00001.jsonl.out")]
    assert sorted(ids) == [f"CALL{i:07d}" for i in range(120)]
    assert ids != sorted(ids)


def test_an_invalid_claude_record_gets_a_400_error_line(local_aws_clean):
    bad = {
        "recordId": "BAD0000001",
        "modelInput": {
            "anthropic_version": "bedrock-2023-05-31",
            "messages": [{"role": "user", "content": "hi"}],
        },
    }
    job, out = run_job(local_aws_clean, files={"a.jsonl": jsonl([*records(100), bad])})
    assert job["status"] == "Completed"
    assert (job["successRecordCount"], job["errorRecordCount"]) == (100, 1)
    line = next(
        x
        for x in read_lines(local_aws_clean.client("s3"), out, "a.jsonl.out")
        if x["recordId"] == "BAD0000001"
    )
    assert line["error"]["errorCode"] == 400
    assert "required key [max_tokens] not found" in line["error"]["errorMessage"]
    assert "modelOutput" not in line


def test_a_summary_cut_by_max_tokens_says_so(local_aws_clean):
    short = [
        {"recordId": f"S{i}", "modelInput": {**_claude(call_text(i)), "max_tokens": 5}} for i in range(100)
    ]
    _, out = run_job(local_aws_clean, files={"a.jsonl": jsonl(short)})
    line = read_lines(local_aws_clean.client("s3"), out, "a.jsonl.out")[0]
    assert line["modelOutput"]["stop_reason"] == "max_tokens"
    assert line["modelOutput"]["usage"]["output_tokens"] <= 5
