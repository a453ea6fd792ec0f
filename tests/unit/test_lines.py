"""Lines spliced from a run's template are byte for byte the lines of the plain path."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from bedrock_batch.lines import LineTemplate, line_of
from bedrock_batch.models import (
    AmazonNova,
    AmazonTitanText,
    AnthropicClaude,
    Converse,
    MetaLlama,
    MetaLlama4,
    MistralText,
    ModelFamily,
    token_chars,
)
from bedrock_batch.prompts import PromptTemplate
from bedrock_batch.records import BatchRecord, RecordBuilder, SourceRow

FAMILIES = [
    AnthropicClaude(),
    AmazonNova(),
    Converse(),
    Converse(system_role=False),
    MetaLlama(),
    MetaLlama4(),
    MistralText(),
    AmazonTitanText(),
]
PARAMS = {"max_tokens": 256, "temperature": 0.2}
TEXTS = [
    "Agent: Hello.\nCustomer: Hi!",
    'quotes " and back\\slashes \\u0041 and \t tabs \r\n',
    "caf\u00e9 \u00bf \u2028 \U0001f642 \u4f60\u597d",
    "x",
]


def one_field_prompt(system: str | None = "You summarize calls.") -> PromptTemplate:
    return PromptTemplate(name="p", version="v1", system=system, user="Summarize:\n{{ transcript }}\nDone.")


def plain_line(
    family: ModelFamily, prompt: PromptTemplate, record_id: str, values: Mapping[str, Any]
) -> bytes:
    system, user = prompt.render(values)
    return line_of(record_id, family.build_input(system=system, prompt=user, params=PARAMS))


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
@pytest.mark.parametrize("text", TEXTS)
def test_spliced_line_equals_the_plain_line_for_every_family(family, text):
    prompt = one_field_prompt()
    template = LineTemplate.for_run(family, prompt, PARAMS)
    assert template is not None
    values = {"transcript": text}
    assert template.line("Rabc123", values) == plain_line(family, prompt, "Rabc123", values)


@pytest.mark.parametrize("family", FAMILIES, ids=lambda family: family.name)
def test_template_without_a_system_prompt_splices_too(family):
    prompt = one_field_prompt(system=None)
    template = LineTemplate.for_run(family, prompt, PARAMS)
    assert template is not None
    values = {"transcript": TEXTS[1]}
    assert template.line("R1", values) == plain_line(family, prompt, "R1", values)


def test_template_with_several_placeholders_escapes_each_value_in_place():
    prompt = PromptTemplate(
        name="p", version="v1", system=None, user='{{ a }} said "{{ b }}" about {{ a }}; none: {{ c }}.'
    )
    template = LineTemplate.for_run(AnthropicClaude(), prompt, PARAMS)
    assert template is not None
    values = {"a": 'Ann "A"', "b": "line\nbreak \\ caf\u00e9", "c": None}
    assert template.line("R2", values) == plain_line(AnthropicClaude(), prompt, "R2", values)
    assert template.user_chars(values) == pytest.approx(token_chars(prompt.render(values)[1]))


def test_system_prompt_with_a_placeholder_uses_the_plain_path():
    prompt = PromptTemplate(name="p", version="v1", system="Agent {{ agent }}.", user="{{ transcript }}")
    assert LineTemplate.for_run(AnthropicClaude(), prompt, PARAMS) is None


class StrippingFamily(AnthropicClaude):
    """A family that changes the prompt text: a template would not give its bytes."""

    def build_input(self, *, system: str | None, prompt: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return super().build_input(system=system, prompt=prompt.strip(), params=params)


TEXT_ONLY = PromptTemplate(name="p", version="v1", system=None, user="{{ transcript }}")


def test_family_that_rewrites_the_prompt_gets_no_template():
    assert LineTemplate.for_run(StrippingFamily(), TEXT_ONLY, PARAMS) is None


def test_builder_without_a_template_still_writes_each_records_line():
    builder = RecordBuilder(StrippingFamily(), TEXT_ONLY, PARAMS)
    record = builder.build(SourceRow(source_key="K1", text="  padded  ", fields={}))
    assert isinstance(record, BatchRecord)
    assert builder.template is None
    assert orjson.loads(record.line) == record.input_line()
    assert record.model_input["messages"][0]["content"][0]["text"] == "padded"


def test_spliced_record_parses_its_model_input_back_from_its_line():
    builder = RecordBuilder(AnthropicClaude(), one_field_prompt(), PARAMS)
    record = builder.build(SourceRow(source_key="K1", text=TEXTS[2], fields={}))
    assert isinstance(record, BatchRecord)
    assert builder.template is not None
    expected = AnthropicClaude().build_input(
        system="You summarize calls.", prompt=f"Summarize:\n{TEXTS[2]}\nDone.", params=PARAMS
    )
    assert record.model_input == expected
    assert record.line == line_of(record.record_id, expected)
