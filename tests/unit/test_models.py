"""Model-family adapters: request bodies and response parsing per BEDROCK_FACTS.md "Model bodies"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bedrock_batch.errors import ConfigError, OutputParseError
from bedrock_batch.models import (
    DEFAULT_MAX_TOKENS,
    AmazonNova,
    AmazonTitanText,
    AnthropicClaude,
    Converse,
    MetaLlama,
    MetaLlama4,
    MistralText,
    ModelOutput,
    check_model_override,
    estimate_tokens,
    family_for,
    family_of_job,
)

PARAMS = {"max_tokens": 512, "temperature": 0.2, "top_p": 0.9}
LLAMA_8B = "meta.llama3-1-8b-instruct-v1:0"
NOVA_MICRO = "amazon.nova-micro-v1:0"


# --- family_for -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "family"),
    [
        ("anthropic.claude-3-5-sonnet-20240620-v1:0", AnthropicClaude),
        ("us.anthropic.claude-3-5-haiku-20241022-v1:0", AnthropicClaude),
        ("global.anthropic.claude-sonnet-4-5-20250929-v1:0", AnthropicClaude),
        ("amazon.nova-lite-v1:0", AmazonNova),
        ("eu.amazon.nova-pro-v1:0", AmazonNova),
        ("apac.amazon.nova-micro-v1:0", AmazonNova),
        ("meta.llama3-1-70b-instruct-v1:0", MetaLlama),
        ("us.meta.llama3-3-70b-instruct-v1:0", MetaLlama),
        ("us.meta.llama4-scout-17b-instruct-v1:0", MetaLlama4),
        ("us.meta.llama4-maverick-17b-instruct-v1:0", MetaLlama4),
        ("mistral.mistral-7b-instruct-v0:2", MistralText),
        ("mistral.mixtral-8x7b-instruct-v0:1", MistralText),
        ("mistral.mistral-large-2402-v1:0", MistralText),
        ("amazon.titan-text-express-v1", AmazonTitanText),
        (
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-haiku-20240307-v1:0",
            AnthropicClaude,
        ),
        ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-lite-v1:0", AmazonNova),
        (f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{LLAMA_8B}:128k/a1b2c3d4e5f6", MetaLlama),
    ],
)
def test_family_for_resolves_by_prefix_after_region_prefix(model_id, family):
    assert type(family_for(model_id)) is family


def test_a_custom_model_takes_its_base_models_window_and_output_cap():
    custom = f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{NOVA_MICRO}:128k/a1b2c3d4e5f6"
    family, base = family_for(custom), family_for(NOVA_MICRO)
    assert (family.context_tokens, family.max_output_tokens) == (base.context_tokens, base.max_output_tokens)
    assert family.context_tokens == 128_000  # Nova Micro's own window, not the Nova family's 300k


OPAQUE_ARNS = [
    (
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6",
        "an application",
    ),
    ("arn:aws:bedrock:us-east-1:123456789012:imported-model/a1b2c3d4e5f6", "an imported model"),
    ("arn:aws:bedrock:us-east-1:123456789012:provisioned-model/a1b2c3d4e5f6", "a provisioned model"),
    (
        "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3d4e5f6",
        "a custom model deployment",
    ),
]
"""Model ARNs that do not name the model behind them, and what the error calls each."""


@pytest.mark.parametrize(("arn", "kind"), OPAQUE_ARNS)
def test_a_model_arn_that_does_not_name_its_model_is_no_run_override_either(arn, kind):
    with pytest.raises(ConfigError, match=rf"model_id param .*{kind}.*model.context_tokens"):
        check_model_override("anthropic.claude-3-5-haiku-20241022-v1:0", arn, "Converse")


@pytest.mark.parametrize(("arn", "kind"), OPAQUE_ARNS)
def test_a_model_arn_that_does_not_name_its_model_points_to_converse(arn, kind):
    with pytest.raises(ConfigError, match=rf"{kind}.*use invocation_type 'Converse'.*model.context_tokens"):
        family_for(arn)
    assert isinstance(family_for(arn, "Converse", context_tokens=64_000), Converse)


def test_family_for_unknown_model_is_config_error_naming_the_model():
    with pytest.raises(ConfigError, match=r"cohere\.command-r-v1:0"):
        family_for("cohere.command-r-v1:0")


def test_family_for_chat_only_mistral_model_points_to_converse():
    with pytest.raises(ConfigError, match="Converse"):
        family_for("mistral.mistral-large-2407-v1:0")


def test_family_for_converse_invocation_uses_converse_with_native_budget():
    family = family_for("us.anthropic.claude-3-5-haiku-20241022-v1:0", "Converse")
    assert isinstance(family, Converse)
    assert family.context_tokens == AnthropicClaude().context_tokens


def test_family_for_converse_accepts_models_without_invoke_adapter():
    family = family_for("cohere.command-r-v1:0", "Converse")
    assert isinstance(family, Converse)
    assert family.context_tokens == 32_000


def test_family_for_unknown_invocation_type_is_config_error():
    with pytest.raises(ConfigError, match="'Streaming'"):
        family_for("amazon.nova-lite-v1:0", "Streaming")


def test_context_budgets_per_family():
    assert AnthropicClaude().context_tokens == 200_000
    assert AmazonNova().context_tokens == 300_000
    assert MetaLlama().context_tokens == 128_000
    assert MistralText().context_tokens == 32_000
    assert AmazonTitanText().context_tokens == 8_000


@pytest.mark.parametrize(
    ("model_id", "window"),
    [
        ("us.amazon.nova-micro-v1:0", 128_000),
        ("amazon.nova-lite-v1:0", 300_000),
        ("meta.llama3-8b-instruct-v1:0", 8_192),
        ("meta.llama3-70b-instruct-v1:0", 8_192),
        ("us.meta.llama3-1-70b-instruct-v1:0", 128_000),
        ("amazon.titan-text-lite-v1", 4_096),
        ("amazon.titan-text-express-v1", 8_000),
    ],
)
def test_a_model_whose_window_is_smaller_than_its_familys_gets_its_own(model_id, window):
    assert family_for(model_id).context_tokens == window
    assert family_for(model_id, "Converse").context_tokens == window


def test_a_configured_context_window_wins_over_the_known_ones():
    assert family_for("meta.llama3-8b-instruct-v1:0", context_tokens=16_000).context_tokens == 16_000
    assert family_for("cohere.command-r-v1:0", "Converse", context_tokens=128_000).context_tokens == 128_000


@pytest.mark.parametrize(
    ("model_id", "cap"),
    [
        ("us.meta.llama3-3-70b-instruct-v1:0", 2_048),
        ("amazon.titan-text-lite-v1", 4_096),
        ("anthropic.claude-3-haiku-20240307-v1:0", 4_096),
    ],
)
@pytest.mark.parametrize("invocation_type", ["InvokeModel", "Converse"])
def test_max_tokens_above_what_the_model_generates_is_refused_naming_both(model_id, cap, invocation_type):
    family = family_for(model_id, invocation_type)
    family.validate_params({"max_tokens": cap})
    with pytest.raises(ConfigError, match=f"'max_tokens' is {cap + 1}; this model generates at most {cap}"):
        family.validate_params({"max_tokens": cap + 1})


def test_models_without_a_known_cap_take_any_max_tokens():
    family_for("anthropic.claude-3-5-haiku-20241022-v1:0").validate_params({"max_tokens": 8_000})


def test_temperature_and_top_p_together_are_refused_where_the_model_takes_one():
    family = family_for("global.anthropic.claude-sonnet-4-5-20250929-v1:0")
    family.validate_params({"temperature": 0.2})
    family.validate_params({"top_p": 0.9})
    with pytest.raises(ConfigError, match="'temperature' and 'top_p': this model takes one of them"):
        family.validate_params({"temperature": 0.2, "top_p": 0.9})
    family_for("anthropic.claude-3-5-haiku-20241022-v1:0").validate_params({"temperature": 0.2, "top_p": 0.9})


# --- estimate_tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcdefg", 2), ("abcdefgh", 3), ("x" * 35, 10)]
)
def test_estimate_tokens_is_chars_over_three_and_a_half_rounded_up(text, tokens):
    assert estimate_tokens(text) == tokens


# --- request bodies -------------------------------------------------------------------------------


def test_claude_input_is_messages_body():
    body = AnthropicClaude().build_input(
        system="Be brief.", prompt="Hello", params={**PARAMS, "top_k": 50, "stop_sequences": ["END"]}
    )
    assert body == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 512,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 50,
        "stop_sequences": ["END"],
    }


def test_claude_input_without_system_or_params_gets_default_max_tokens():
    body = AnthropicClaude().build_input(system=None, prompt="Hello", params={})
    assert body == {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": DEFAULT_MAX_TOKENS,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
    }


def test_nova_input_uses_system_list_and_inference_config():
    body = AmazonNova().build_input(
        system="Be brief.", prompt="Hello", params={**PARAMS, "top_k": 20, "stop_sequences": ["END"]}
    )
    assert body == {
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
        "inferenceConfig": {
            "maxTokens": 512,
            "temperature": 0.2,
            "topP": 0.9,
            "topK": 20,
            "stopSequences": ["END"],
        },
    }


def test_llama_input_uses_llama3_prompt_format():
    body = MetaLlama().build_input(system="Be brief.", prompt="Hello", params=PARAMS)
    assert body == {
        "prompt": (
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n"
        ),
        "max_gen_len": 512,
        "temperature": 0.2,
        "top_p": 0.9,
    }


def test_llama4_input_uses_llama4_chat_tokens():
    body = MetaLlama4().build_input(system="Be brief.", prompt="Hello", params=PARAMS)
    assert body == {
        "prompt": (
            "<|begin_of_text|><|header_start|>system<|header_end|>\n\nBe brief.<|eot|>"
            "<|header_start|>user<|header_end|>\n\nHello<|eot|>"
            "<|header_start|>assistant<|header_end|>\n\n"
        ),
        "max_gen_len": 512,
        "temperature": 0.2,
        "top_p": 0.9,
    }


@pytest.mark.parametrize(
    "model_id",
    [
        "amazon.titan-text-express-v1",
        "mistral.mistral-7b-instruct-v0:2",
        "mistral.mixtral-8x7b-instruct-v0:1",
    ],
)
def test_converse_puts_the_system_text_first_in_the_user_turn_where_the_model_takes_no_system_prompt(
    model_id,
):
    body = family_for(model_id, "Converse").build_input(system="Be brief.", prompt="Hello", params=PARAMS)
    assert "system" not in body
    assert body["messages"] == [{"role": "user", "content": [{"text": "Be brief.\n\nHello"}]}]


def test_converse_sends_the_system_prompt_to_models_that_take_one():
    body = family_for("mistral.mistral-large-2407-v1:0", "Converse").build_input(
        system="Be brief.", prompt="Hello", params=PARAMS
    )
    assert body["system"] == [{"text": "Be brief."}]


def test_llama_input_without_system_has_no_system_header():
    body = MetaLlama().build_input(system=None, prompt="Hello", params={})
    assert "system" not in body["prompt"]
    assert body["prompt"].startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>")


def test_mistral_input_wraps_prompt_in_inst_tags():
    body = MistralText().build_input(
        system="Be brief.", prompt="Hello", params={**PARAMS, "top_k": 40, "stop_sequences": ["</s>"]}
    )
    assert body == {
        "prompt": "<s>[INST] Be brief.\n\nHello [/INST]",
        "max_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["</s>"],
    }


def test_titan_input_uses_input_text_and_generation_config():
    body = AmazonTitanText().build_input(
        system=None, prompt="Hello", params={**PARAMS, "stop_sequences": ["User:"]}
    )
    assert body == {
        "inputText": "User: Hello\nBot:",
        "textGenerationConfig": {
            "maxTokenCount": 512,
            "temperature": 0.2,
            "topP": 0.9,
            "stopSequences": ["User:"],
        },
    }


def test_converse_input_is_converse_request():
    body = Converse().build_input(system="Be brief.", prompt="Hello", params={"max_tokens": 100})
    assert body == {
        "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hello"}]}],
        "inferenceConfig": {"maxTokens": 100},
    }


# --- parameter validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "param"),
    [
        (MetaLlama(), "top_k"),
        (MetaLlama(), "stop_sequences"),
        (AmazonTitanText(), "top_k"),
        (Converse(), "top_k"),
    ],
)
def test_validate_params_rejects_param_the_family_lacks(family, param):
    value = ["x"] if param == "stop_sequences" else 5
    with pytest.raises(ConfigError, match=param):
        family.validate_params({param: value})


@pytest.mark.parametrize("param", ["tools", "tool_choice", "toolConfig", "response_format", "output_format"])
def test_validate_params_rejects_tool_use_and_structured_output(param):
    with pytest.raises(ConfigError, match=rf"{param}.*tool use or structured output"):
        AnthropicClaude().validate_params({param: [{"name": "x"}]})


def test_validate_params_rejects_unknown_param_by_name():
    with pytest.raises(ConfigError, match="'maxTokens'"):
        AmazonNova().validate_params({"maxTokens": 10})


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("max_tokens", 0),
        ("max_tokens", "10"),
        ("temperature", 1.5),
        ("top_p", -0.1),
        ("stop_sequences", "END"),
    ],
)
def test_validate_params_rejects_bad_values(param, value):
    with pytest.raises(ConfigError, match=param):
        AnthropicClaude().validate_params({param: value})


def test_build_input_validates_params():
    with pytest.raises(ConfigError, match="top_k"):
        MetaLlama().build_input(system=None, prompt="Hello", params={"top_k": 5})


# --- response parsing -----------------------------------------------------------------------------


def test_claude_output_parsed():
    output = AnthropicClaude().parse_output(
        {
            "id": "msg_bdrk_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-3-5-haiku-20241022",
            "content": [
                {"type": "text", "text": "Customer asked "},
                {"type": "text", "text": "for a refund."},
            ],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 120, "output_tokens": 9},
        }
    )
    assert output == ModelOutput("Customer asked for a refund.", 120, 9, "end_turn")


def test_claude_output_without_usage_has_no_token_counts():
    output = AnthropicClaude().parse_output({"content": [{"type": "text", "text": "Hi"}]})
    assert output == ModelOutput("Hi", None, None, None)


def test_nova_output_parsed():
    output = AmazonNova().parse_output(
        {
            "output": {"message": {"role": "assistant", "content": [{"text": "Refund issued."}]}},
            "stopReason": "end_turn",
            "usage": {"inputTokens": 80, "outputTokens": 4, "totalTokens": 84},
        }
    )
    assert output == ModelOutput("Refund issued.", 80, 4, "end_turn")


def test_llama_output_parsed():
    output = MetaLlama().parse_output(
        {
            "generation": "Refund issued.",
            "prompt_token_count": 70,
            "generation_token_count": 5,
            "stop_reason": "stop",
        }
    )
    assert output == ModelOutput("Refund issued.", 70, 5, "stop")


def test_mistral_output_parsed_without_token_counts():
    output = MistralText().parse_output({"outputs": [{"text": "Refund issued.", "stop_reason": "stop"}]})
    assert output == ModelOutput("Refund issued.", None, None, "stop")


def test_titan_output_parsed():
    output = AmazonTitanText().parse_output(
        {
            "inputTextTokenCount": 60,
            "results": [{"tokenCount": 6, "outputText": "\nRefund issued.\n", "completionReason": "FINISH"}],
        }
    )
    assert output == ModelOutput("\nRefund issued.\n", 60, 6, "FINISH")


def test_converse_output_parsed_skipping_non_text_blocks():
    output = Converse().parse_output(
        {
            "output": {
                "message": {
                    "role": "assistant",
                    "content": [{"reasoningContent": {"reasoningText": {"text": "hmm"}}}, {"text": "Done."}],
                }
            },
            "stopReason": "max_tokens",
            "usage": {"inputTokens": 10, "outputTokens": 2, "totalTokens": 12},
            "metrics": {"latencyMs": 100},
        }
    )
    assert output == ModelOutput("Done.", 10, 2, "max_tokens")


def test_token_counts_of_wrong_type_are_ignored():
    output = MetaLlama().parse_output(
        {"generation": "x", "prompt_token_count": "70", "generation_token_count": True}
    )
    assert (output.input_tokens, output.output_tokens) == (None, None)


@pytest.mark.parametrize("count", [-1, 2**31, 5_000_000_000])
def test_a_token_count_no_integer_column_holds_is_read_as_none(count):
    """Loaded in binary, such a count would wrap around; in text it would fail the job's load."""
    output = AnthropicClaude().parse_output(
        {"content": [{"type": "text", "text": "Done."}], "usage": {"input_tokens": count, "output_tokens": 9}}
    )

    assert (output.text, output.input_tokens, output.output_tokens) == ("Done.", None, 9)


@pytest.mark.parametrize(
    ("family", "model_output", "field"),
    [
        (AnthropicClaude(), {"completion": "old text-completion shape"}, r"modelOutput\.content"),
        (AmazonNova(), {"output": {}}, r"modelOutput\.output\.message"),
        (
            Converse(),
            {"output": {"message": {"role": "assistant"}}},
            r"modelOutput\.output\.message\.content",
        ),
        (MetaLlama(), {"outputs": [{"text": "x"}]}, r"modelOutput\.generation"),
        (MistralText(), {"outputs": []}, r"modelOutput\.outputs"),
        (MistralText(), {"outputs": [{"stop_reason": "stop"}]}, r"modelOutput\.outputs\[0\]\.text"),
        (AmazonTitanText(), {"inputTextTokenCount": 3}, r"modelOutput\.results"),
        (AmazonTitanText(), {"results": [{"tokenCount": 1}]}, r"modelOutput\.results\[0\]\.outputText"),
    ],
)
def test_wrong_output_shape_raises_naming_the_field(family, model_output, field):
    with pytest.raises(OutputParseError, match=field):
        family.parse_output(model_output)


def test_import_stays_cheap():
    code = "import sys, bedrock_batch.models; print(sorted({'boto3', 'orjson', 'yaml'} & set(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).parents[2] / "plugins",
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("job", "family"),
    [
        ({"modelInvocationType": "Converse"}, Converse),
        ({"modelInvocationType": "InvokeModel"}, AnthropicClaude),
        ({"status": "Completed"}, AnthropicClaude),  # left out: Bedrock's default, not the pipeline's
        (None, Converse),  # no job: the pipeline's
    ],
)
def test_a_jobs_output_is_read_under_the_invocation_type_it_ran_with(job, family):
    model = "anthropic.claude-3-5-haiku-20241022-v1:0"
    assert type(family_of_job(job, model_id=model, invocation_type="Converse")) is family


CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"


def test_a_runs_model_override_of_the_same_family_is_taken():
    check_model_override(CLAUDE, "us.anthropic.claude-3-5-sonnet-20240620-v1:0")


def test_a_runs_model_override_of_another_family_is_refused_naming_the_param_and_both_families():
    pattern = r"model_id param 'amazon\.nova-lite-v1:0' .*'amazon-nova'.*'anthropic-claude'"
    with pytest.raises(ConfigError, match=pattern):
        check_model_override(CLAUDE, "amazon.nova-lite-v1:0")


def test_under_converse_a_runs_model_override_may_be_of_another_family():
    check_model_override(CLAUDE, "amazon.nova-lite-v1:0", "Converse")


def test_a_runs_model_override_to_a_later_generation_of_the_family_is_taken():
    check_model_override("meta.llama3-1-70b-instruct-v1:0", "us.meta.llama4-maverick-17b-instruct-v1:0")
    check_model_override("us.meta.llama4-maverick-17b-instruct-v1:0", "meta.llama3-1-70b-instruct-v1:0")
