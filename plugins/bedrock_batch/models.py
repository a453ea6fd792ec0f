"""Model-family adapters: build a record's ``modelInput`` and read its ``modelOutput``.

A batch record's ``modelInput`` is exactly the InvokeModel body of the chosen model (or the Converse
request when the job's ``modelInvocationType`` is ``Converse``), so each family writes its own JSON
shape. The pipeline speaks a small set of normalised parameters (``max_tokens``, ``temperature``,
``top_p``, ``top_k``, ``stop_sequences``); each adapter maps them to its family's names and rejects
the ones its family lacks, so a wrong setting fails at parse time rather than in a billed job.

This module is imported at DAG-parse time: it imports nothing heavy.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from bedrock_batch.errors import ConfigError, OutputParseError

#: Output budget used when ``max_tokens`` is not set. Claude requires one, and an explicit cap keeps
#: the cost of a batch predictable for every family.
DEFAULT_MAX_TOKENS = 1024

#: The normalised parameter names a pipeline config may use.
NORMALISED_PARAMS = ("max_tokens", "temperature", "top_p", "top_k", "stop_sequences")

#: Parameters that ask for tool use or structured output, which batch inference does not support.
UNSUPPORTED_IN_BATCH = frozenset(
    {
        "tools",
        "tool_choice",
        "toolConfig",
        "tool_config",
        "response_format",
        "output_format",
        "output_config",
        "structured_output",
        "json_schema",
    }
)

#: Cross-region inference profile prefixes that may precede a model id (``us.anthropic...``).
REGION_PREFIXES = frozenset(
    {"us", "us-gov", "eu", "apac", "ap", "jp", "au", "ca", "sa", "me", "af", "global"}
)

#: ASCII characters per token, used by :func:`estimate_tokens`.
CHARS_PER_TOKEN = 3.5
#: ASCII characters' worth that each UTF-8 byte past a character's first adds (:func:`token_chars`).
EXTRA_BYTE_CHARS = 1.4


def token_chars(text: str, utf8_bytes: int | None = None) -> float:
    """
    The length of ``text`` in ASCII characters' worth of tokens: one for each character, plus 1.4
    for each UTF-8 byte past a character's first (``utf8_bytes`` when the caller knows it).

    A tokenizer spends a token on 3.5-4 characters of English but about one on each Chinese or
    Japanese character: three UTF-8 bytes, so 1 + 2 x 1.4 = 3.8 characters here, ~1.1 tokens.
    Accented Latin, Cyrillic or Greek letters (two bytes) count 2.4. Counting characters alone put
    30,000 Japanese characters at 8,600 tokens: a text four times a model's window passed the
    context check and failed in the job, and ``on_too_long: truncate`` never cut it.
    """
    chars = len(text)
    if text.isascii():
        return chars
    if utf8_bytes is None:
        utf8_bytes = len(text.encode("utf-8", "surrogatepass"))
    return chars + (utf8_bytes - chars) * EXTRA_BYTE_CHARS


def estimate_tokens(text: str) -> int:
    """
    Estimate the token count of ``text``: :func:`token_chars` / 3.5, rounded up (characters / 3.5
    for ASCII text).

    This is an estimate, not a tokenizer: it is used to keep records well inside a model's context
    window and to size jobs, never to bill. Real counts come back in the output and the manifest.
    """
    if not text:
        return 0
    return math.ceil(token_chars(text) / CHARS_PER_TOKEN)


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 us a record on a million-record load
class ModelOutput:
    """What the pipeline keeps of one model response, whatever the family."""

    text: str
    input_tokens: int | None
    output_tokens: int | None
    stop_reason: str | None


def no_text_reason(output: ModelOutput) -> str | None:
    """Why ``output`` is no summary, or None: a response with no text (content filtered, or no
    room left to answer) was billed but holds nothing to keep, and must not pass for a summary."""
    text = output.text
    if text and not text.isspace():
        return None
    return f"the model returned no text (stop reason {output.stop_reason or 'not given'})"


class ModelFamily(ABC):
    """
    One request/response dialect of Bedrock models.

    ``context_tokens`` is the default context budget of the family (the smallest common window of
    its current models, documented as a default); records whose estimated input plus ``max_tokens``
    exceed it are rejected or truncated by the record builder.
    """

    name: ClassVar[str]
    context_tokens: int
    #: normalised parameter name -> this family's parameter name; absent means unsupported.
    param_names: ClassVar[Mapping[str, str]]
    #: The model's largest ``max_tokens``, where known (``family_for`` sets it per model).
    max_output_tokens: int | None = None
    #: The model takes ``temperature`` or ``top_p``, not both (``family_for`` sets it per model).
    one_sampling_param: bool = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(context_tokens={self.context_tokens})"

    def validate_params(self, params: Mapping[str, Any]) -> None:
        """Raise ``ConfigError`` naming the first parameter this family cannot take or whose value is bad."""
        for key, value in params.items():
            if key in UNSUPPORTED_IN_BATCH:
                raise ConfigError(
                    f"Model parameter {key!r}: Bedrock batch inference does not support tool use "
                    "or structured output"
                )
            if key not in NORMALISED_PARAMS:
                raise ConfigError(
                    f"Unknown model parameter {key!r}; expected one of {', '.join(NORMALISED_PARAMS)}"
                )
            if value is None:
                continue
            if key not in self.param_names:
                raise ConfigError(f"Model family {self.name!r} does not support the parameter {key!r}")
            _check_value(key, value)
        # Bedrock refuses every record of a job that breaks these: a night of final errors.
        cap, asked = self.max_output_tokens, params.get("max_tokens")
        if cap is not None and asked is not None and int(asked) > cap:
            raise ConfigError(f"Model parameter 'max_tokens' is {asked}; this model generates at most {cap}")
        if (
            self.one_sampling_param
            and params.get("temperature") is not None
            and params.get("top_p") is not None
        ):
            raise ConfigError(
                "Model parameters 'temperature' and 'top_p': this model takes one of them, not both"
            )

    def max_tokens(self, params: Mapping[str, Any]) -> int:
        """The output budget a record built with ``params`` will ask for."""
        value = params.get("max_tokens")
        return DEFAULT_MAX_TOKENS if value is None else int(value)

    def input_budget(self, params: Mapping[str, Any]) -> int:
        """Tokens left for the prompt once the output budget is reserved."""
        return self.context_tokens - self.max_tokens(params)

    def _mapped(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """Validate ``params`` and return them under this family's names, ``max_tokens`` always set.

        A run builds every record from the same params object, so the last mapping is kept and
        reused while the same object comes back (validation was ~20% of building a record).
        """
        cached = self.__dict__.get("_last_mapped")
        if cached is not None and cached[0] is params:
            return dict(cached[1])
        self.validate_params(params)
        merged = {"max_tokens": DEFAULT_MAX_TOKENS}
        merged.update({k: v for k, v in params.items() if v is not None})
        mapped = {self.param_names[k]: _plain(v) for k, v in merged.items()}
        self._last_mapped = (params, mapped)
        return dict(mapped)

    @abstractmethod
    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """The ``modelInput`` of one record."""

    @abstractmethod
    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        """Read one ``modelOutput``; raise ``OutputParseError`` naming the field when the shape is wrong."""


def _check_value(key: str, value: Any) -> None:
    if key in ("max_tokens", "top_k"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"Model parameter {key!r} must be a positive integer, got {value!r}")
    elif key in ("temperature", "top_p"):
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise ConfigError(f"Model parameter {key!r} must be a number between 0 and 1, got {value!r}")
    elif key == "stop_sequences" and (
        isinstance(value, str) or not all(isinstance(s, str) and s for s in value)
    ):
        raise ConfigError(
            f"Model parameter 'stop_sequences' must be a list of non-empty strings, got {value!r}"
        )


def _plain(value: Any) -> Any:
    """Copy sequences to lists so the model input is plain JSON."""
    if isinstance(value, list | tuple):
        return list(value)
    return value


def is_mapping(value: Any) -> bool:
    """``isinstance(value, Mapping)``, with parsed JSON's plain ``dict`` answered without the ABC check."""
    return type(value) is dict or isinstance(value, Mapping)


def _field(data: Any, path: str) -> Any:
    """Follow a dotted path through mappings; raise ``OutputParseError`` naming the missing field."""
    current = data
    parts = path.split(".")
    for depth, part in enumerate(parts, start=1):
        if not is_mapping(current) or part not in current:
            raise OutputParseError(f"modelOutput.{'.'.join(parts[:depth])} is missing")
        current = current[part]
    return current


MAX_TOKEN_COUNT = 2**31 - 1
"""The largest count the warehouse's INTEGER token columns hold."""


def _optional_int(data: Any, *path: str) -> int | None:
    """A token count if present, integral and between 0 and ``MAX_TOKEN_COUNT``; ``None`` otherwise
    (counts are informational, and one no column can hold must not fail or wrap in the load)."""
    current = data
    for part in path:
        if not is_mapping(current):
            return None
        current = current.get(part)
    if isinstance(current, bool) or not isinstance(current, int) or not 0 <= current <= MAX_TOKEN_COUNT:
        return None
    return current


def _claude_output(output: Any) -> ModelOutput | None:
    """The usual Messages response (one text block, integer usage) read in one go; else ``None``.

    A million-record load spends most of its time here, so the common shape skips the general
    path's checks one field at a time; anything else falls through to that path.
    """
    if type(output) is not dict:
        return None
    content, usage = output.get("content"), output.get("usage")
    if type(content) is not list or len(content) != 1 or type(usage) is not dict:
        return None
    block = content[0]
    if type(block) is not dict or block.get("type", "text") != "text":
        return None
    text, stop = block.get("text"), output.get("stop_reason")
    input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    if type(text) is not str or type(input_tokens) is not int or type(output_tokens) is not int:
        return None
    if not (0 <= input_tokens <= MAX_TOKEN_COUNT and 0 <= output_tokens <= MAX_TOKEN_COUNT):
        return None  # the general path reads such a count as none
    return ModelOutput(text, input_tokens, output_tokens, stop if type(stop) is str else None)


def _optional_str(data: Any, key: str) -> str | None:
    value = data.get(key) if is_mapping(data) else None
    return value if isinstance(value, str) else None


def _first(items: Any, field: str) -> Mapping[str, Any]:
    if not isinstance(items, list) or not items:
        raise OutputParseError(f"modelOutput.{field} is empty or not a list")
    first = items[0]
    if not is_mapping(first):
        raise OutputParseError(f"modelOutput.{field}[0] is not an object")
    return first


def _user_message(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


class AnthropicClaude(ModelFamily):
    """Anthropic Claude through the Messages API body (``anthropic_version`` bedrock-2023-05-31)."""

    name = "anthropic-claude"
    anthropic_version = "bedrock-2023-05-31"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "stop_sequences": "stop_sequences",
    }

    def __init__(self, context_tokens: int = 200_000) -> None:
        self.context_tokens = context_tokens

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {"anthropic_version": self.anthropic_version}
        mapped = self._mapped(params)
        body["max_tokens"] = mapped.pop("max_tokens")
        if system:
            body["system"] = system
        body["messages"] = _user_message([{"type": "text", "text": prompt}])
        body.update(mapped)
        return body

    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        fast = _claude_output(model_output)
        if fast is not None:
            return fast
        content = _field(model_output, "content")
        if not isinstance(content, list):
            raise OutputParseError("modelOutput.content is not a list")
        texts = [
            text
            for block in content
            if (type(block) is dict or is_mapping(block))
            and block.get("type", "text") == "text"
            and isinstance(text := block.get("text"), str)
        ]
        return ModelOutput(
            text="".join(texts),
            input_tokens=_optional_int(model_output, "usage", "input_tokens"),
            output_tokens=_optional_int(model_output, "usage", "output_tokens"),
            stop_reason=_optional_str(model_output, "stop_reason"),
        )


class _MessagesOutput(ModelFamily):
    """Shared by Nova and Converse: ``output.message.content[*].text``, camelCase usage."""

    def _body(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if system:
            body["system"] = [{"text": system}]
        body["messages"] = _user_message([{"text": prompt}])
        body["inferenceConfig"] = self._mapped(params)
        return body

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self._body(system=system, prompt=prompt, params=params)

    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        content = _field(model_output, "output.message.content")
        if not isinstance(content, list):
            raise OutputParseError("modelOutput.output.message.content is not a list")
        texts = [b["text"] for b in content if is_mapping(b) and isinstance(b.get("text"), str)]
        return ModelOutput(
            text="".join(texts),
            input_tokens=_optional_int(model_output, "usage", "inputTokens"),
            output_tokens=_optional_int(model_output, "usage", "outputTokens"),
            stop_reason=_optional_str(model_output, "stopReason"),
        )


class AmazonNova(_MessagesOutput):
    """Amazon Nova understanding models (Micro, Lite, Pro, Premier, Nova 2) through their InvokeModel body."""

    name = "amazon-nova"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "top_k": "topK",
        "stop_sequences": "stopSequences",
    }

    def __init__(self, context_tokens: int = 300_000) -> None:
        self.context_tokens = context_tokens


class Converse(_MessagesOutput):
    """
    The Converse request and response, for jobs created with ``modelInvocationType='Converse'``.

    ``top_k`` is not part of Converse's common ``inferenceConfig`` (it would need per-model
    ``additionalModelRequestFields``), so it is rejected.
    """

    name = "converse"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokens",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def __init__(self, context_tokens: int = 32_000, *, system_role: bool = True) -> None:
        self.context_tokens = context_tokens
        self.system_role = system_role

    def __repr__(self) -> str:
        return f"Converse(context_tokens={self.context_tokens}, system_role={self.system_role})"

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        if system and not self.system_role:  # the model refuses a system prompt: it leads the user turn
            return self._body(system=None, prompt=f"{system}\n\n{prompt}", params=params)
        return self._body(system=system, prompt=prompt, params=params)


class MetaLlama(ModelFamily):
    """Meta Llama 3.x instruct models: a single prompt string in the Llama 3 chat format."""

    name = "meta-llama"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_gen_len",
        "temperature": "temperature",
        "top_p": "top_p",
    }

    #: The chat tokens around a role's name and at the end of its turn (Llama 3's).
    header_start: ClassVar[str] = "<|start_header_id|>"
    header_end: ClassVar[str] = "<|end_header_id|>"
    end_of_turn: ClassVar[str] = "<|eot_id|>"

    def __init__(self, context_tokens: int = 128_000) -> None:
        self.context_tokens = context_tokens

    @classmethod
    def format_prompt(cls, system: str | None, prompt: str) -> str:
        """The chat format: header-delimited turns, ending on an open assistant turn."""
        turns = [("system", system)] if system else []
        parts = ["<|begin_of_text|>"]
        for role, text in [*turns, ("user", prompt)]:
            parts.append(f"{cls.header_start}{role}{cls.header_end}\n\n{text}{cls.end_of_turn}")
        parts.append(f"{cls.header_start}assistant{cls.header_end}\n\n")
        return "".join(parts)

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"prompt": self.format_prompt(system, prompt), **self._mapped(params)}

    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        text = _field(model_output, "generation")
        if not isinstance(text, str):
            raise OutputParseError("modelOutput.generation is not a string")
        return ModelOutput(
            text=text,
            input_tokens=_optional_int(model_output, "prompt_token_count"),
            output_tokens=_optional_int(model_output, "generation_token_count"),
            stop_reason=_optional_str(model_output, "stop_reason"),
        )


class MetaLlama4(MetaLlama):
    """Meta Llama 4 instruct models (Scout, Maverick): the Llama 3 body with Llama 4's chat tokens."""

    name = "meta-llama4"
    header_start: ClassVar[str] = "<|header_start|>"
    header_end: ClassVar[str] = "<|header_end|>"
    end_of_turn: ClassVar[str] = "<|eot|>"


class MistralText(ModelFamily):
    """
    Mistral text-completion models (7B, Mixtral 8x7B, Large 2402, Small 2402): ``<s>[INST] ... [/INST]``.

    The format has no system role, so the system prompt leads the instruction. The response carries
    no token counts.
    """

    name = "mistral-text"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "top_k": "top_k",
        "stop_sequences": "stop",
    }

    def __init__(self, context_tokens: int = 32_000) -> None:
        self.context_tokens = context_tokens

    @staticmethod
    def format_prompt(system: str | None, prompt: str) -> str:
        instruction = f"{system}\n\n{prompt}" if system else prompt
        return f"<s>[INST] {instruction} [/INST]"

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"prompt": self.format_prompt(system, prompt), **self._mapped(params)}

    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        first = _first(_field(model_output, "outputs"), "outputs")
        text = first.get("text")
        if not isinstance(text, str):
            raise OutputParseError("modelOutput.outputs[0].text is missing")
        return ModelOutput(
            text=text, input_tokens=None, output_tokens=None, stop_reason=_optional_str(first, "stop_reason")
        )


class AmazonTitanText(ModelFamily):
    """Amazon Titan Text (Lite, Express, Premier): ``inputText`` in the ``User: ...\\nBot:`` style."""

    name = "amazon-titan-text"
    param_names: ClassVar[Mapping[str, str]] = {
        "max_tokens": "maxTokenCount",
        "temperature": "temperature",
        "top_p": "topP",
        "stop_sequences": "stopSequences",
    }

    def __init__(self, context_tokens: int = 8_000) -> None:
        self.context_tokens = context_tokens

    @staticmethod
    def format_prompt(system: str | None, prompt: str) -> str:
        turn = f"User: {prompt}\nBot:"
        return f"{system}\n\n{turn}" if system else turn

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return {"inputText": self.format_prompt(system, prompt), "textGenerationConfig": self._mapped(params)}

    def parse_output(self, model_output: Mapping[str, Any]) -> ModelOutput:
        first = _first(_field(model_output, "results"), "results")
        text = first.get("outputText")
        if not isinstance(text, str):
            raise OutputParseError("modelOutput.results[0].outputText is missing")
        return ModelOutput(
            text=text,
            input_tokens=_optional_int(model_output, "inputTextTokenCount"),
            output_tokens=_optional_int(first, "tokenCount"),
            stop_reason=_optional_str(first, "completionReason"),
        )


#: (model id prefix after any region prefix, family class). First match wins.
_FAMILIES: tuple[tuple[str, type[ModelFamily]], ...] = (
    ("anthropic.claude", AnthropicClaude),
    ("amazon.nova-", AmazonNova),
    ("amazon.titan-text", AmazonTitanText),
    ("amazon.titan-tg1", AmazonTitanText),
    ("meta.llama3", MetaLlama),
    ("meta.llama4", MetaLlama4),
    ("mistral.mistral-7b-instruct", MistralText),
    ("mistral.mixtral-8x7b-instruct", MistralText),
    ("mistral.mistral-large-2402", MistralText),
    ("mistral.mistral-small-2402", MistralText),
)

#: (model id prefix after any region prefix, context window in tokens) where a model's window is
#: smaller than its family's default. First match wins; ``model.context_tokens`` overrides both.
_SMALLER_WINDOWS: tuple[tuple[str, int], ...] = (
    ("amazon.nova-micro", 128_000),
    ("meta.llama3-8b-instruct", 8_192),
    ("meta.llama3-70b-instruct", 8_192),
    ("amazon.titan-text-lite", 4_096),
)

#: (model id prefix, largest max_tokens) where Bedrock caps a model's output below what a config may ask.
_MAX_OUTPUT_TOKENS: tuple[tuple[str, int], ...] = (
    ("meta.llama", 2_048),
    ("amazon.titan-text-lite", 4_096),
    ("amazon.titan-text-express", 8_192),
    ("amazon.titan-text-premier", 3_072),
    ("anthropic.claude-3-haiku", 4_096),
    ("anthropic.claude-3-sonnet", 4_096),
    ("anthropic.claude-3-opus", 4_096),
)

#: Models that refuse ``temperature`` and ``top_p`` together.
_ONE_SAMPLING_PARAM: tuple[str, ...] = (
    "anthropic.claude-sonnet-4-5",
    "anthropic.claude-haiku-4-5",
    "anthropic.claude-opus-4-1",
    "anthropic.claude-opus-4-5",
)

#: Models whose Converse API takes no system prompt (AWS's Converse feature table): the system text
#: leads the user message instead.
_CONVERSE_WITHOUT_SYSTEM: tuple[str, ...] = (
    "amazon.titan-text",
    "amazon.titan-tg1",
    "mistral.mistral-7b-instruct",
    "mistral.mixtral-8x7b-instruct",
)

INVOCATION_TYPES = ("InvokeModel", "Converse")


#: ARN resource types whose name does not say which foundation model runs behind it.
_OPAQUE_RESOURCES: dict[str, str] = {
    "application-inference-profile": "an application inference profile",
    "imported-model": "an imported model",
    "provisioned-model": "a provisioned model",
    "custom-model-deployment": "a custom model deployment",
}


def _arn_resource(model_id: str) -> tuple[str, str]:
    """``(resource type, resource name)`` of a Bedrock ARN; model ids hold colons, so split five times."""
    parts = model_id.split(":", 5)
    resource = parts[5] if len(parts) == 6 else model_id
    kind, sep, name = resource.partition("/")
    return (kind, name) if sep else ("", resource)


def base_model_id(model_id: str) -> str:
    """
    The foundation model id inside ``model_id``.

    Strips an ARN down to the model it names and then a cross-region prefix, so
    ``arn:...:inference-profile/us.anthropic.claude-...`` and ``global.anthropic.claude-...`` both
    give ``anthropic.claude-...``. A custom model's ARN names its base model in the middle
    (``custom-model/<base model id>/<12-character id>``, CreateModelInvocationJob's pattern), so it
    gives that base. An :func:`opaque_model_kind` ARN gives its bare id, which names no family.
    """
    resource = model_id
    if model_id.startswith("arn:"):
        kind, name = _arn_resource(model_id)
        base, sep, _ = name.rpartition("/")
        resource = base if kind == "custom-model" and sep else name.rsplit("/", 1)[-1]
    head, sep, rest = resource.partition(".")
    if sep and head.lower() in REGION_PREFIXES:
        return rest
    return resource


def is_custom_model(model_id: str) -> bool:
    """Whether ``model_id`` is a custom model's ARN (``custom-model/<base model id>/<id>``)."""
    return model_id.startswith("arn:") and _arn_resource(model_id)[0] == "custom-model"


def opaque_model_kind(model_id: str) -> str | None:
    """What an ARN whose id does not name its foundation model is ("an application inference
    profile", ...), or ``None`` for every model id that does."""
    if not model_id.startswith("arn:"):
        return None
    return _OPAQUE_RESOURCES.get(_arn_resource(model_id)[0])


def family_for(
    model_id: str, invocation_type: str = "InvokeModel", *, context_tokens: int | None = None
) -> ModelFamily:
    """
    The adapter for ``model_id`` under ``invocation_type``.

    Converse is used whenever ``invocation_type == "Converse"``. The context budget is
    ``context_tokens`` when given (the config's ``model.context_tokens``), else the model's own
    window where it is smaller than its family's (``_SMALLER_WINDOWS``), else the family's default.
    The model's output cap and sampling rule (``_MAX_OUTPUT_TOKENS``, ``_ONE_SAMPLING_PARAM``) go
    on the family for ``validate_params``. An unknown family is a ``ConfigError`` naming the model id.
    """
    if invocation_type not in INVOCATION_TYPES:
        raise ConfigError(
            f"Unknown invocation type {invocation_type!r} for model {model_id!r}; "
            f"expected one of {', '.join(INVOCATION_TYPES)}"
        )
    base = base_model_id(model_id).lower()
    native = next((cls for prefix, cls in _FAMILIES if base.startswith(prefix)), None)
    window = context_tokens or next(
        (size for prefix, size in _SMALLER_WINDOWS if base.startswith(prefix)), None
    )
    family: ModelFamily
    if invocation_type == "Converse":
        family = Converse(
            window or (native().context_tokens if native else Converse().context_tokens),
            system_role=not base.startswith(_CONVERSE_WITHOUT_SYSTEM),
        )
    elif native is None and (opaque := opaque_model_kind(model_id)):
        raise ConfigError(
            f"Model {model_id!r} is {opaque}: its id does not say which model runs behind it, so its "
            "InvokeModel request body cannot be chosen; use invocation_type 'Converse' (one request form "
            "for every model) and set model.context_tokens to the model's context window"
        )
    elif native is None:
        raise ConfigError(
            f"Model {model_id!r} belongs to no supported InvokeModel family (Anthropic Claude, Amazon Nova, "
            "Meta Llama 3+, Mistral text completion, Amazon Titan Text); use invocation_type 'Converse'"
        )
    else:
        family = native(window) if window else native()
    family.max_output_tokens = next(
        (cap for prefix, cap in _MAX_OUTPUT_TOKENS if base.startswith(prefix)), None
    )
    family.one_sampling_param = base.startswith(_ONE_SAMPLING_PARAM)
    return family


def same_request_body(one: ModelFamily, other: ModelFamily) -> bool:
    """Whether two InvokeModel families take the same request body. A later generation's adapter
    extends its family's (Llama 4's, Llama 3's), so either may be the other's subclass."""
    return isinstance(one, type(other)) or isinstance(other, type(one))


def check_model_override(configured: str, override: str, invocation_type: str = "InvokeModel") -> None:
    """
    Refuse a run's ``model_id`` param whose requests take another form than the configured model's.

    Under InvokeModel each family has its own request body, and the prompt, its parameters and the
    token budget were set for the configured one: another family is a ConfigError naming both. Under
    Converse every model takes the same request, so any model id Converse takes is allowed, but for
    an :func:`opaque_model_kind` ARN: its context window is unknown (the config's is its own model's).
    """
    wanted = family_for(override, invocation_type)  # an unknown model id is a ConfigError already
    if opaque := opaque_model_kind(override):
        raise ConfigError(
            f"model_id param {override!r} is {opaque}, whose id does not say which model runs behind it, "
            "so its context window is unknown; set it as model.id with model.context_tokens in the config"
        )
    if invocation_type == "Converse":
        return
    family = family_for(configured, invocation_type)
    if not same_request_body(wanted, family):
        raise ConfigError(
            f"model_id param {override!r} is of model family {wanted.name!r}, not {family.name!r} as the "
            f"configured model {configured!r}: under InvokeModel a run may only switch to a model of the "
            "same family (its request body); change model.id in the pipeline's config instead"
        )


def family_of_job(
    job: Mapping[str, Any] | None, *, model_id: str, invocation_type: str = "InvokeModel"
) -> ModelFamily:
    """
    The adapter that reads ``job``'s output: under the invocation type the job ran with
    (GetModelInvocationJob's ``modelInvocationType``; when Bedrock leaves it out, its default,
    InvokeModel), and ``invocation_type`` (the pipeline's) only without a job.

    A job runs for up to a week; a deploy that switches the pipeline to Converse meanwhile must not
    make its InvokeModel output unreadable (every line would be recorded as an error, none retried).
    """
    if job is None:
        return family_for(model_id, invocation_type)
    return family_for(model_id, str(job.get("modelInvocationType") or "InvokeModel"))
