"""Fake model outputs in each family's real response shape, from one deterministic summarizer.

The family is resolved from the model id (a region prefix such as ``us.`` or ``global.`` is
allowed); ``modelInvocationType=Converse`` always gives the Converse shape.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from typing import Any

from local_aws.summarizer import count_tokens, generate

_REGION_PREFIX = re.compile(r"^(us|eu|apac|ap|global|us-gov|ca|jp|au)\.")
_SPECIAL = re.compile(r"(?m)<\|[^|]*\|>|\[/?INST\]|</?s>|^(system|user|assistant)$")


class ModelInputError(Exception):
    """A modelInput the family rejects: a 400 per record in batch, ValidationException at runtime."""


def base_model_id(model_id: str) -> str:
    """``us.anthropic.claude-...`` -> ``anthropic.claude-...``; ARNs keep their last path part, but for
    ``custom-model/<base model id>/<id>``, whose base model (the family that answers) is in the middle."""
    resource = model_id.split(":", 5)[-1] if model_id.startswith("arn:") else model_id
    base, sep, _ = resource.partition("/")[2].rpartition("/")
    model = base if is_custom_model(model_id) and sep else resource.rsplit("/", 1)[-1]
    return _REGION_PREFIX.sub("", model)


def _arn_kind(model_id: str) -> str:
    return model_id.split(":", 5)[-1].partition("/")[0] if model_id.startswith("arn:") else ""


def is_custom_model(model_id: str) -> bool:
    """Whether ``model_id`` is a custom model's ARN (``arn:...:custom-model/<base>/<id>``)."""
    return _arn_kind(model_id) == "custom-model"


def is_model_deployment(model_id: str) -> bool:
    """Whether ``model_id`` is a custom model deployment's ARN: how a custom model runs on demand."""
    return _arn_kind(model_id) == "custom-model-deployment"


def family_of_body(body: Any) -> str | None:
    """The family whose InvokeModel request ``body`` is. A deployment's ARN names no model, so the
    stand-in answers a deployment as the family its request is written for."""
    if not isinstance(body, Mapping):
        return None
    if "anthropic_version" in body:
        return "claude"
    if "messages" in body:
        return "nova"
    if "inputText" in body:
        return "titan"
    if "prompt" in body:  # Llama's chat template has header tokens, Mistral's [INST]; max_gen_len is Llama's
        prompt = str(body["prompt"])
        llama = "<|begin_of_text|>" in prompt or "<|start_header_id|>" in prompt or "max_gen_len" in body
        return "llama" if llama and "[INST]" not in prompt else "mistral"
    return None


def family_name(model_id: str, invocation_type: str = "InvokeModel", body: Any = None) -> str | None:
    """``claude`` | ``nova`` | ``llama`` | ``mistral`` | ``titan`` | ``converse``, or None if unsupported
    (a custom model deployment's by its request ``body``: batch jobs, which have none here, refuse it)."""
    if invocation_type == "Converse":
        return "converse"
    if is_model_deployment(model_id):
        return family_of_body(body)
    model = base_model_id(model_id)
    for prefix, name in (
        ("anthropic.", "claude"),
        ("amazon.nova-", "nova"),
        ("meta.llama", "llama"),
        ("mistral.", "mistral"),
        ("amazon.titan-text-", "titan"),
    ):
        if model.startswith(prefix):
            return name
    return None


def _bad(detail: str) -> ModelInputError:
    return ModelInputError(f"Malformed input request: {detail}, please reformat your input and try again.")


def _require(body: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in body:
        raise _bad(f"#: required key [{key}] not found")
    value = body[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise _bad(f"#/{key}: expected type: {getattr(kind, '__name__', 'value')}")
    return value


def _optional_int(body: Mapping[str, Any], key: str, default: int, path: str = "#") -> int:
    value = body.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise _bad(f"{path}/{key}: must be a positive integer")
    return value


def _extraneous(body: Mapping[str, Any], allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise _bad(f"#: extraneous key [{extra[0]}] is not permitted")


def _message_text(messages: Any, *, blocks_typed: bool) -> str:
    if not isinstance(messages, list) or not messages:
        raise _bad("#/messages: expected minimum item count: 1")
    texts: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _bad(f"#/messages/{i}/role: must be user or assistant")
        content = message.get("content")
        if isinstance(content, str) and blocks_typed:
            blocks = [{"type": "text", "text": content}]
        elif isinstance(content, list) and content:
            blocks = content
        else:
            raise _bad(f"#/messages/{i}/content: expected a non-empty list")
        for block in blocks:
            if isinstance(block, dict) and isinstance(block.get("text"), str):
                if message["role"] == "user":
                    texts.append(block["text"])
            elif not isinstance(block, dict):
                raise _bad(f"#/messages/{i}/content: expected objects")
    return "\n".join(texts)


def _tokens_in(*parts: Any) -> int:
    return count_tokens(" ".join(str(p) for p in parts if p))


def _id(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def _claude(model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    _extraneous(
        body,
        {
            "anthropic_version",
            "max_tokens",
            "system",
            "messages",
            "temperature",
            "top_p",
            "top_k",
            "stop_sequences",
            "anthropic_beta",
            "metadata",
        },
    )
    _require(body, "anthropic_version", str)
    max_tokens = _require(body, "max_tokens", int)
    if max_tokens < 1:
        raise _bad("#/max_tokens: must be at least 1")
    messages = _require(body, "messages", list)
    text = _message_text(messages, blocks_typed=True)
    system = body.get("system")
    stops = body.get("stop_sequences") or []
    out, reason, n_out = generate(text, max_tokens=max_tokens, stop_sequences=stops)
    stop_reason = {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}[reason]
    stop_sequence = next((s for s in stops if reason == "stop_sequence"), None)
    return {
        "id": "msg_bdrk_" + _id(text),
        "type": "message",
        "role": "assistant",
        "model": base_model_id(model_id).removeprefix("anthropic.").split("-v")[0],
        "content": [{"type": "text", "text": out}],
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "usage": {"input_tokens": _tokens_in(system, text), "output_tokens": n_out},
    }


def _converse_like(body: Mapping[str, Any], *, converse: bool) -> dict[str, Any]:
    allowed = {
        "system",
        "messages",
        "inferenceConfig",
        "schemaVersion",
        "toolConfig",
        "additionalModelRequestFields",
        "additionalModelResponseFieldPaths",
        "performanceConfig",
        "promptVariables",
        "requestMetadata",
        "guardrailConfig",
        "modelId",
    }
    _extraneous(body, allowed)
    messages = _require(body, "messages", list)
    text = _message_text(messages, blocks_typed=False)
    config = body.get("inferenceConfig") or {}
    if not isinstance(config, dict):
        raise _bad("#/inferenceConfig: expected type: JSONObject")
    max_tokens = _optional_int(config, "maxTokens", 512, "#/inferenceConfig")
    system = " ".join(b.get("text", "") for b in body.get("system") or [] if isinstance(b, dict))
    out, reason, n_out = generate(text, max_tokens=max_tokens, stop_sequences=config.get("stopSequences"))
    n_in = _tokens_in(system, text)
    result: dict[str, Any] = {
        "output": {"message": {"role": "assistant", "content": [{"text": out}]}},
        "stopReason": {"end": "end_turn", "max_tokens": "max_tokens", "stop_sequence": "stop_sequence"}[
            reason
        ],
        "usage": {"inputTokens": n_in, "outputTokens": n_out, "totalTokens": n_in + n_out},
    }
    if converse:
        result["metrics"] = {"latencyMs": 40 + n_out}
    return result


def _llama(_model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    _extraneous(body, {"prompt", "max_gen_len", "temperature", "top_p", "images"})
    prompt = _require(body, "prompt", str)
    max_len = _optional_int(body, "max_gen_len", 512)
    out, reason, n_out = generate(_SPECIAL.sub(" ", prompt), max_tokens=max_len)
    return {
        "generation": out,
        "prompt_token_count": _tokens_in(prompt),
        "generation_token_count": n_out,
        "stop_reason": "length" if reason == "max_tokens" else "stop",
    }


def _mistral(_model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    _extraneous(body, {"prompt", "max_tokens", "temperature", "top_p", "top_k", "stop"})
    prompt = _require(body, "prompt", str)
    max_tokens = _optional_int(body, "max_tokens", 512)
    out, reason, _ = generate(
        _SPECIAL.sub(" ", prompt), max_tokens=max_tokens, stop_sequences=body.get("stop")
    )
    return {"outputs": [{"text": out, "stop_reason": "length" if reason == "max_tokens" else "stop"}]}


def _titan(_model_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
    _extraneous(body, {"inputText", "textGenerationConfig"})
    text = _require(body, "inputText", str)
    config = body.get("textGenerationConfig") or {}
    max_tokens = _optional_int(config, "maxTokenCount", 512, "#/textGenerationConfig")
    out, reason, n_out = generate(text, max_tokens=max_tokens, stop_sequences=config.get("stopSequences"))
    return {
        "inputTextTokenCount": _tokens_in(text),
        "results": [
            {
                "tokenCount": n_out,
                "outputText": out,
                "completionReason": {
                    "end": "FINISH",
                    "max_tokens": "LENGTH",
                    "stop_sequence": "STOP_CRITERIA_MET",
                }[reason],
            }
        ],
    }


_FAMILIES: dict[str, Callable[[str, Mapping[str, Any]], dict[str, Any]]] = {
    "claude": _claude,
    "nova": lambda _m, body: _converse_like(body, converse=False),
    "converse": lambda _m, body: _converse_like(body, converse=True),
    "llama": _llama,
    "mistral": _mistral,
    "titan": _titan,
}


def invoke(model_id: str, invocation_type: str, model_input: Any) -> dict[str, Any]:
    """The model's response body for ``model_input``; ModelInputError when the family rejects it."""
    family = family_name(model_id, invocation_type, model_input)
    if family is None:
        raise ModelInputError(f"The model {model_id} is not supported by local_aws.")
    if not isinstance(model_input, dict):
        raise _bad("#: expected type: JSONObject")
    return _FAMILIES[family](model_id, model_input)


def usage_of(output: Mapping[str, Any], model_input: Mapping[str, Any]) -> tuple[int, int]:
    """(input tokens, output tokens) of a response body of any family."""
    if "usage" in output:
        usage = output["usage"]
        return (
            usage.get("input_tokens", usage.get("inputTokens", 0)),
            usage.get("output_tokens", usage.get("outputTokens", 0)),
        )
    if "generation" in output:
        return output["prompt_token_count"], output["generation_token_count"]
    if "results" in output:
        return output["inputTextTokenCount"], output["results"][0]["tokenCount"]
    if "outputs" in output:
        return _tokens_in(model_input.get("prompt")), count_tokens(output["outputs"][0]["text"])
    return 0, 0
