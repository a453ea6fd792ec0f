"""Record identity and the row -> record builder, including every bad-row kind."""

from __future__ import annotations

import hashlib
import json
import re

import orjson
import pytest

from bedrock_batch import records
from bedrock_batch.errors import ConfigError
from bedrock_batch.models import AmazonTitanText, AnthropicClaude, MetaLlama, estimate_tokens
from bedrock_batch.prompts import PromptTemplate
from bedrock_batch.records import (
    TRUNCATION_MARKER,
    BatchRecord,
    RecordBuilder,
    Rejection,
    SourceRow,
    record_id_for,
    run_key,
)

SECRET = "my card number is 4111 1111 1111 1111"


@pytest.fixture
def call_prompt():
    return PromptTemplate(
        name="summarize_call",
        version="v1",
        system="Summarize the call.",
        user="Call {{ call_id }}:\n{{ transcript }}",
    )


@pytest.fixture
def builder(call_prompt):
    return RecordBuilder(AnthropicClaude(), call_prompt, {"max_tokens": 300})


def row(key, text="Agent: Hello. Customer: " + SECRET, **fields):
    return SourceRow(source_key=key, text=text, fields={"call_id": key, **fields})


# --- identity -------------------------------------------------------------------------------------


def test_record_id_is_11_alphanumeric_chars_as_the_aws_input_example_names():
    record_id = record_id_for("CALL-000001")
    assert re.fullmatch(r"[0-9A-Za-z]{11}", record_id)


def test_record_id_is_deterministic_and_distinct_per_key():
    assert record_id_for("42") == record_id_for("42")
    assert len({record_id_for(str(i)) for i in range(10_000)}) == 10_000


@pytest.mark.parametrize("key", ["42", "CALL-000001", "ünïcode", "x" * 300])
def test_record_id_matches_the_documented_recipe(key):
    import string

    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    value = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    digits = []
    for _ in range(11):
        value, digit = divmod(value, 62)
        digits.append(alphabet[digit])
    assert record_id_for(key) == "".join(reversed(digits))


def test_the_largest_digest_still_fits_in_11_characters(monkeypatch):
    from bedrock_batch import records

    class Largest:
        def digest(self) -> bytes:
            return b"\xff" * 8

    monkeypatch.setattr(records, "_blake2b", lambda *args, **kwargs: Largest())
    assert record_id_for("any") == "LygHa16AHYF"  # 2**64 - 1 in base62


def test_run_key_is_s3_safe_stable_and_readable():
    key = run_key("summarize_calls", "scheduled__2026-01-02T03:00:00+00:00")
    assert re.fullmatch(r"[a-z0-9-]+-[a-z2-7]{8}", key)
    assert key.startswith("scheduled-2026-01-02t03-00-00-00-00-")
    assert key == run_key("summarize_calls", "scheduled__2026-01-02T03:00:00+00:00")


def test_run_key_differs_for_runs_whose_slugs_collide():
    assert run_key("d", "Manual__X") != run_key("d", "manual__x")
    assert run_key("d", "a" * 100 + "1") != run_key("d", "a" * 100 + "2")


def test_run_key_of_unsluggable_run_id_is_still_valid():
    assert re.fullmatch(r"run-[a-z2-7]{8}", run_key("d", "::::"))


# --- building -------------------------------------------------------------------------------------


def test_build_returns_record_with_model_input_of_the_family(builder):
    record = builder.build(row("C1", text="Agent: Hello."))
    assert isinstance(record, BatchRecord)
    assert record.record_id == record_id_for("C1")
    assert record.source_key == "C1"
    assert record.attempt == 1
    assert record.model_input["messages"][0]["content"][0]["text"] == "Call C1:\nAgent: Hello."
    assert record.model_input["system"] == "Summarize the call."
    assert record.model_input["max_tokens"] == 300
    assert record.est_input_tokens == estimate_tokens("Summarize the call.") + estimate_tokens(
        "Call C1:\nAgent: Hello."
    )
    assert not record.truncated


def test_repr_of_rows_and_records_never_shows_the_text(builder):
    source = row("C1")
    record = builder.build(source)
    assert SECRET not in repr(source)
    assert SECRET not in repr(record)
    assert "C1" in repr(record)


def test_build_converts_non_text_key_to_text(builder):
    record = builder.build(SourceRow(source_key=17, text="hi", fields={"call_id": 17}, attempt=2))
    assert record.source_key == "17"
    assert record.attempt == 2


def test_record_lines_are_plain_json(builder):
    record = builder.build(row("C1"))
    line = json.loads(json.dumps(record.input_line()))
    assert line == {"recordId": record.record_id, "modelInput": record.model_input}
    assert record.map_line() == {"r": record.record_id, "k": "C1", "a": 1}


def test_builder_accepts_utf8_bytes(builder):
    record = builder.build(row("C1", text="Caf\u00e9 ok".encode()))
    assert "Café ok" in record.model_input["messages"][0]["content"][0]["text"]


@pytest.mark.parametrize("text", ["C:\\bin\\u0041 \\f", "\u00bf\u00a0 caf\u00e9 \U0001f642", "x\\u001b"])
def test_text_that_only_looks_like_an_escaped_control_is_accepted(builder, text):
    record = builder.build(row("C1", text=text))
    assert isinstance(record, BatchRecord)
    assert text in record.model_input["messages"][0]["content"][0]["text"]


def test_record_carries_its_jsonl_line(builder):
    record = builder.build(row("C1", text="Agent: hello \u00e9"))
    assert record.line == orjson.dumps(record.input_line()) + b"\n"


def test_builder_keeps_tabs_and_newlines(builder):
    assert isinstance(builder.build(row("C1", text="a\tb\r\nc\n")), BatchRecord)


def test_builder_requires_prompt_to_use_the_text_field():
    prompt = PromptTemplate(name="p", version="1", system=None, user="{{ call_id }}")
    with pytest.raises(ConfigError, match="transcript"):
        RecordBuilder(AnthropicClaude(), prompt, {})


def test_builder_validates_params_up_front(call_prompt):
    with pytest.raises(ConfigError, match="top_k"):
        RecordBuilder(MetaLlama(), call_prompt, {"top_k": 5})


def test_builder_rejects_unknown_on_too_long_policy(call_prompt):
    with pytest.raises(ConfigError, match="on_too_long"):
        RecordBuilder(AnthropicClaude(), call_prompt, {}, on_too_long="ignore")


# --- bad rows -------------------------------------------------------------------------------------


def assert_rejected(result, code, key):
    assert isinstance(result, Rejection), result
    assert result.code == code
    assert result.stage == records.BUILD_STAGE
    assert result.source_key == key
    assert SECRET not in result.message
    assert "4111" not in result.message
    if key is not None:
        assert repr(key) in result.message


def test_null_key_is_rejected(builder):
    assert_rejected(builder.build(row(None)), "null_key", None)


def test_blank_key_is_rejected(builder):
    assert_rejected(builder.build(row("  ")), "null_key", "  ")


def test_duplicate_key_is_rejected(builder):
    assert isinstance(builder.build(row("C1")), BatchRecord)
    result = builder.build(row("C1"))
    assert_rejected(result, "duplicate_key", "C1")


def test_a_good_row_after_a_bad_row_of_the_same_key_is_built(builder):
    assert_rejected(builder.build(row("C1", text="")), "empty_text", "C1")
    assert isinstance(builder.build(row("C1")), BatchRecord)


def test_a_bad_row_after_a_good_row_of_the_same_key_is_rejected_as_a_duplicate(builder):
    assert isinstance(builder.build(row("C1")), BatchRecord)
    assert_rejected(builder.build(row("C1", text="")), "duplicate_key", "C1")


def test_two_bad_rows_of_one_key_are_each_rejected_for_what_is_wrong_with_them(builder):
    assert_rejected(builder.build(row("C1", text="")), "empty_text", "C1")
    assert_rejected(builder.build(row("C1", text="a\x00b")), "control_characters", "C1")


def test_record_id_collision_is_rejected(builder, monkeypatch):
    monkeypatch.setattr(records, "record_id_for", lambda key: "Rsame")
    assert isinstance(builder.build(row("C1")), BatchRecord)
    result = builder.build(row("C2"))
    assert_rejected(result, "duplicate_key", "C2")
    assert "record id Rsame" in result.message


@pytest.mark.parametrize("text", [None, "", "   \n\t  "])
def test_empty_or_whitespace_text_is_rejected(builder, text):
    assert_rejected(builder.build(row("C1", text=text)), "empty_text", "C1")


def test_undecodable_bytes_are_rejected(builder):
    result = builder.build(row("C1", text=SECRET.encode() + b"\xff\xfe"))
    assert_rejected(result, "invalid_utf8", "C1")
    assert "offset" in result.message


def test_lone_surrogate_is_rejected(builder):
    assert_rejected(builder.build(row("C1", text=SECRET + "\ud800")), "invalid_utf8", "C1")


@pytest.mark.parametrize("at", ["start", "end"])
@pytest.mark.parametrize("path", ["text-only-prompt", "prompt-with-columns", "truncated"])
def test_lone_surrogate_is_rejected_on_every_path(call_prompt, path, at):
    """Also the guard of the control search, which must only ever see texts orjson has accepted."""
    if path == "truncated":
        builder = RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 512}, on_too_long="truncate")
        body = "word " * 10_000
    else:
        text_only = PromptTemplate(name="t", version="v1", system="Summarize.", user="{{ transcript }}")
        prompt = text_only if path == "text-only-prompt" else call_prompt
        builder = RecordBuilder(AnthropicClaude(), prompt, {"max_tokens": 300})
        body = SECRET
    text = "\ud800" + body if at == "start" else body + "\ud800"
    assert_rejected(builder.build(row("C1", text=text)), "invalid_utf8", "C1")


def test_lone_surrogate_in_a_column_the_prompt_uses_is_rejected():
    prompt = PromptTemplate(name="p", version="v1", system=None, user="{{ agent_name }}: {{ transcript }}")
    result = RecordBuilder(AnthropicClaude(), prompt, {"max_tokens": 300}).build(
        row("C1", agent_name="Bob\udc80")
    )
    assert_rejected(result, "invalid_utf8", "C1")
    assert "agent_name" in result.message


def test_lone_surrogate_in_a_column_the_prompt_never_sends_is_no_reason_to_reject(builder):
    record = builder.build(row("C1", agent_name="Bob\udc80"))
    assert isinstance(record, BatchRecord)
    assert "Bob" not in record.line.decode()


CONTROL_CHARACTERS = [
    chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]
]


@pytest.mark.parametrize("char", CONTROL_CHARACTERS, ids=lambda char: f"U+{ord(char):04X}")
def test_control_characters_are_rejected(builder, char):
    result = builder.build(row("C1", text=SECRET + char + "end"))
    assert_rejected(result, "control_characters", "C1")
    assert "1 control character" in result.message


TEXT_KINDS = {"ascii": "a", "latin-1": "\u00e9", "bmp": "\u4e2d", "astral": "\U0001f642"}


@pytest.mark.parametrize("kind", TEXT_KINDS)
@pytest.mark.parametrize("fast", [True, False], ids=["text-only-prompt", "prompt-with-columns"])
def test_a_control_character_is_found_wherever_it_sits(call_prompt, kind, fast):
    """The search for controls runs over the text's UTF-8 in vector-sized steps: every offset
    around the step sizes, in texts of every storage kind, must still be seen."""
    text_only = PromptTemplate(name="t", version="v1", system="Summarize.", user="{{ transcript }}")
    prompt = text_only if fast else call_prompt
    builder = RecordBuilder(AnthropicClaude(), prompt, {"max_tokens": 300})
    assert builder.takes_fast_lines is fast
    filler = "Agent: hello " + TEXT_KINDS[kind] * 150
    for at in range(len(filler) + 1):
        for char in ("\x00", "\x1f", "\x7f", "\x85"):
            key = f"K{at}-{ord(char)}"
            result = builder.build(row(key, text=filler[:at] + char + filler[at:]))
            assert isinstance(result, Rejection) and result.code == "control_characters", (at, char)
    clean = builder.build(row("clean", text=filler))
    assert isinstance(clean, BatchRecord)


def test_too_long_text_is_rejected_by_default(call_prompt):
    builder = RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 512})
    result = builder.build(row("C1", text=SECRET + " " + "word " * 10_000))
    assert_rejected(result, "too_long", "C1")
    assert str(builder.budget) in result.message
    assert builder.rejected["too_long"] == 1


def test_too_long_text_is_truncated_to_the_budget_when_asked(call_prompt):
    family = AmazonTitanText()
    builder = RecordBuilder(family, call_prompt, {"max_tokens": 512}, on_too_long="truncate")
    text = "word " * 10_000
    record = builder.build(row("C1", text=text))
    assert isinstance(record, BatchRecord)
    assert record.truncated
    assert builder.truncated == 1
    assert record.est_input_tokens <= family.context_tokens - 512
    input_text = record.model_input["inputText"]
    assert TRUNCATION_MARKER in input_text
    assert input_text.startswith("Summarize the call.\n\nUser: Call C1:\nword word")
    # Most of the budget is used: truncation does not throw away far more than needed.
    assert record.est_input_tokens > (family.context_tokens - 512) * 0.9


def test_text_within_budget_is_not_truncated(call_prompt):
    builder = RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 512}, on_too_long="truncate")
    record = builder.build(row("C1", text="short"))
    assert not record.truncated
    assert TRUNCATION_MARKER not in record.model_input["inputText"]


def test_template_alone_over_budget_is_rejected_even_when_truncating():
    prompt = PromptTemplate(name="p", version="1", system="x" * 40_000, user="{{ transcript }}")
    builder = RecordBuilder(AmazonTitanText(), prompt, {}, on_too_long="truncate")
    assert_rejected(builder.build(SourceRow("C1", "hello", {})), "too_long", "C1")


def test_max_tokens_larger_than_context_is_config_error(call_prompt):
    with pytest.raises(ConfigError, match="no room"):
        RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 8_000})


def test_builder_counts_outcomes(builder):
    for result_row in [row("A"), row("B"), row("A"), row(None), row("C", text="")]:
        builder.build(result_row)
    assert builder.built == 2
    assert dict(builder.rejected) == {"duplicate_key": 1, "null_key": 1, "empty_text": 1}


@pytest.mark.parametrize("char", ["\x01", "\x7f", "\x85"], ids=["C0", "DEL", "C1"])
def test_a_control_character_in_the_cut_off_tail_of_a_truncated_text_is_rejected(call_prompt, char):
    builder = RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 512}, on_too_long="truncate")

    result = builder.build(row("C1", text="word " * 10_000 + char + "end"))

    assert_rejected(result, "control_characters", "C1")


# --- texts in scripts of about a token a character ---------------------------------------------------

CJK = "お客様の請求書について確認します。"


def test_a_japanese_text_is_estimated_at_about_a_token_a_character_not_one_per_three_and_a_half():
    text = CJK * 100
    assert len(text) <= estimate_tokens(text) <= 1.5 * len(text)


def test_an_accented_latin_text_is_estimated_a_little_above_plain_ascii():
    ascii_text = "Grusse, ich mochte meine Rechnung prufen. " * 50
    accented = "Grüße, ich möchte meine Rechnung prüfen. " * 50
    assert estimate_tokens(ascii_text) < estimate_tokens(accented) < 1.25 * estimate_tokens(ascii_text)


TEXT_ONLY = PromptTemplate(name="p", version="1", system="Summarize the call.", user="{{ transcript }}")


@pytest.mark.parametrize("prompt", ["text only", "with a column"])
def test_a_japanese_text_over_the_models_window_is_rejected_not_sent_to_fail(call_prompt, prompt):
    """At a token a character, budget-many characters do not fit; characters / 3.5 said they did."""
    builder = RecordBuilder(
        AmazonTitanText(), TEXT_ONLY if prompt == "text only" else call_prompt, {"max_tokens": 512}
    )
    text = (CJK * (builder.budget // len(CJK) + 1))[: builder.budget]
    assert_rejected(builder.build(row("C1", text=text)), "too_long", "C1")


def test_a_japanese_text_is_truncated_to_the_budget_at_about_a_token_a_character(call_prompt):
    builder = RecordBuilder(AmazonTitanText(), call_prompt, {"max_tokens": 512}, on_too_long="truncate")
    record = builder.build(row("C1", text=CJK * 2_000))
    assert isinstance(record, BatchRecord) and record.truncated
    kept = record.model_input["inputText"].count("。") * len(CJK)
    assert 0.6 * builder.budget < kept <= builder.budget
    assert record.est_input_tokens <= builder.budget
