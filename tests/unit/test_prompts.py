"""Prompt templates: loading, placeholder safety, rendering and column checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.prompts import PromptTemplate, load_prompt

SHIPPED = Path(__file__).parents[2] / "include" / "prompts" / "summarize_call_v1.yaml"
SOURCE_COLUMNS = ("call_id", "started_at", "agent_id", "customer_id", "transcript")


@pytest.fixture
def prompt_file(tmp_path):
    def write(text: str, name: str = "p.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_load_prompt_reads_version_system_user_and_fields(prompt_file):
    path = prompt_file(
        'version: 3\nsystem: "You are {{ role }}."\nuser: |\n  Call {{ call_id }}: {{ transcript }}\n'
    )
    prompt = load_prompt(path)
    assert prompt.name == "p"
    assert prompt.version == "3"
    assert prompt.system == "You are {{ role }}."
    assert prompt.fields == ("role", "call_id", "transcript")
    assert prompt.path == str(path)


def test_load_prompt_without_system_renders_none(prompt_file):
    prompt = load_prompt(prompt_file("version: v1\nuser: 'Hi {{ name }}'\n"))
    assert prompt.render({"name": "Ann"}) == (None, "Hi Ann")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user: hi\n", "'version' is required"),
        ("version: 1\n", "'user' must be a non-empty string"),
        ("version: 1\nuser: hi\nmodel: x\n", "unknown key 'model'"),
        ("- a list\n", "must be a mapping"),
        ("version: 1\nuser: [unclosed\n", "not valid YAML"),
    ],
)
def test_load_prompt_rejects_malformed_file_naming_it(prompt_file, text, message):
    path = prompt_file(text, "bad.yaml")
    with pytest.raises(ConfigError, match=message) as info:
        load_prompt(path)
    assert "bad.yaml" in str(info.value)


def test_load_prompt_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml"):
        load_prompt(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "placeholder",
    [
        "{{ __class__ }}",
        "{{ _private }}",
        "{{ row.__class__ }}",
        "{{ transcript.upper }}",
        "{{ fields['x'] }}",
        "{{ 1 + 1 }}",
        "{{ name | upper }}",
        "{{ }}",
    ],
)
def test_placeholder_that_is_not_a_plain_identifier_is_rejected(prompt_file, placeholder):
    path = prompt_file(f"version: 1\nuser: |\n  Hello {placeholder}\n", "unsafe.yaml")
    with pytest.raises(ConfigError, match="not a plain column name") as info:
        load_prompt(path)
    assert "unsafe.yaml" in str(info.value)


@pytest.mark.parametrize("user", ["Hello {{ name }", "Hello {{ name", "Hello name }}"])
def test_unbalanced_braces_are_rejected(user):
    with pytest.raises(ConfigError, match="unbalanced"):
        PromptTemplate(name="t", version="1", system=None, user=user)


def test_value_containing_placeholder_syntax_is_not_expanded():
    prompt = PromptTemplate(name="t", version="1", system="Sys {{ a }}", user="{{ a }} and {{ b }}")
    system, user = prompt.render({"a": "{{ b }}", "b": "{{ __class__ }}"})
    assert system == "Sys {{ b }}"
    assert user == "{{ b }} and {{ __class__ }}"


def test_values_are_inserted_literally():
    prompt = PromptTemplate(name="t", version="1", system=None, user="<{{ a }}>")
    assert prompt.render({"a": "\\1 $0 %s {} \n"}) == (None, "<\\1 $0 %s {} \n>")


def test_render_formats_null_as_empty_and_other_values_as_text():
    prompt = PromptTemplate(name="t", version="1", system=None, user="{{ a }}|{{ b }}|{{ c }}")
    assert prompt.render({"a": None, "b": 42, "c": b"caf\xc3\xa9"}) == (None, "|42|café")


def test_render_missing_field_names_it():
    prompt = PromptTemplate(name="t", version="1", system=None, user="{{ call_id }}: {{ transcript }}")
    with pytest.raises(ConfigError, match="transcript"):
        prompt.render({"call_id": "C1"})


def test_placeholders_tolerate_missing_spaces():
    prompt = PromptTemplate(name="t", version="1", system=None, user="{{a}}-{{  b  }}")
    assert prompt.fields == ("a", "b")
    assert prompt.render({"a": 1, "b": 2}) == (None, "1-2")


def test_check_fields_accepts_selected_columns():
    prompt = PromptTemplate(name="t", version="1", system=None, user="{{ call_id }} {{ transcript }}")
    prompt.check_fields(SOURCE_COLUMNS)


def test_check_fields_names_unknown_placeholder_and_template_file():
    prompt = PromptTemplate(name="t", version="1", system=None, user="{{ transcript }} {{ agent_name }}")
    with pytest.raises(ConfigError, match=r"summarize\.yaml.*agent_name"):
        prompt.check_fields(SOURCE_COLUMNS, source="include/prompts/summarize.yaml")


def test_check_fields_defaults_to_the_loaded_path(prompt_file):
    prompt = load_prompt(prompt_file("version: 1\nuser: '{{ missing_col }}'\n", "mine.yaml"))
    with pytest.raises(ConfigError, match=r"mine\.yaml.*missing_col"):
        prompt.check_fields(SOURCE_COLUMNS)


def test_shipped_summarize_prompt_uses_only_source_columns():
    prompt = load_prompt(SHIPPED)
    assert prompt.version == "v1"
    assert prompt.system
    assert "transcript" in prompt.fields
    prompt.check_fields(SOURCE_COLUMNS)
    system, user = prompt.render({"call_id": "C-1", "transcript": "Agent: Hello."})
    assert "Agent: Hello." in user
    assert "{{" not in user
    assert "{{" not in (system or "")
