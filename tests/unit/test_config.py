"""Pipeline configs: the shipped one loads; every kind of mistake names the file and the field."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bedrock_batch.config import PIPELINES_DIR, check_runtime_values, load_pipeline, on_demand_model_id
from bedrock_batch.errors import ConfigError

SHIPPED = PIPELINES_DIR / "summarize_calls.yaml"


def write_variant(tmp_path: Path, change, name: str = "summarize_calls") -> Path:
    raw = yaml.safe_load(SHIPPED.read_text())
    change(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def set_in(path: str, value):
    def change(raw):
        *parents, leaf = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[leaf] = value

    return change


def test_shipped_pipeline_loads():
    config = load_pipeline(SHIPPED)
    assert config.name == "summarize_calls"
    assert config.model.id.startswith("anthropic.claude")
    assert config.small_batch.policy == "carry_over"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("model.id", "acme.unknown-model-v1", "model.id"),
        ("aws.role_arn", "arn:aws:iam::12:role/x", "aws.role_arn"),
        ("staging.input_bucket", "Not_A_Bucket", "staging.input_bucket"),
        ("staging.output_bucket", "a", "staging.output_bucket"),
        ("source.table", "call transcripts; drop table x", "source.table"),
        ("timezone", "Mars/Olympus_Mons", "timezone"),
        ("jobs.timeout_hours", 3, "jobs.timeout_hours"),
        ("small_batch.policy", "maybe", "small_batch.policy"),
        ("staging.kms_key_id", "not a key", "staging.kms_key_id"),
        ("staging.expected_bucket_owner", "12345", "staging.expected_bucket_owner"),
        ("staging.upload_threads", 0, "staging.upload_threads"),
        ("staging.input_prefix", "/", "staging.input_prefix: name a folder"),
        ("staging.output_prefix", "", "staging.output_prefix: name a folder"),
        ("staging.upload_threads", 9, "staging.upload_threads"),
        ("warehouse.error_table", "call_summaries", "warehouse"),
        ("schedule", "0 25 * * *", "schedule"),
        ("jobs.tags", {"team": "support (EU)"}, "jobs.tags"),
        ("jobs.quota_overrides", {"max_records_per_jobs": 60000}, "jobs.quota_overrides"),
        ("jobs.quota_overrides", {"max_records_per_job": 0}, "jobs.quota_overrides"),
    ],
)
def test_mistake_names_the_file_and_the_field(tmp_path, field, value, expected):
    path = write_variant(tmp_path, set_in(field, value))
    with pytest.raises(ConfigError) as raised:
        load_pipeline(path)
    assert str(path) in str(raised.value)
    assert expected in str(raised.value)


def test_a_pending_table_too_long_for_its_window_claims_table_fails_at_import(tmp_path):
    path = write_variant(tmp_path, set_in("warehouse.pending_table", "p" * 56))
    with pytest.raises(ConfigError, match=r"warehouse: warehouse.pending_table = 'p{56}' is too long"):
        load_pipeline(path)


def test_table_names_differing_only_in_case_fail_at_import(tmp_path):
    path = write_variant(tmp_path, set_in("warehouse.error_table", "Call_Summaries"))
    with pytest.raises(ConfigError, match=r"warehouse\.error_table = 'Call_Summaries' is already used"):
        load_pipeline(path)


def test_max_tokens_that_fill_the_models_context_fail_at_import(tmp_path):
    def change(raw):
        raw["model"]["context_tokens"] = 4_000
        raw["model"]["params"]["max_tokens"] = 4_000

    with pytest.raises(ConfigError, match=r"model.params: max_tokens 4000 leaves no room .* context of 4000"):
        load_pipeline(write_variant(tmp_path, change))


def test_unknown_setting_is_reported_by_its_path(tmp_path):
    path = write_variant(tmp_path, set_in("source.text_colum", "transcript"))
    with pytest.raises(ConfigError, match=r"source\.text_colum"):
        load_pipeline(path)


def test_missing_required_setting_is_reported(tmp_path):
    path = write_variant(tmp_path, lambda raw: raw["source"].pop("key_column"))
    with pytest.raises(ConfigError, match=r"source\.key_column"):
        load_pipeline(path)


def test_prompt_naming_an_unselected_column_fails_naming_the_placeholder(tmp_path):
    prompt = tmp_path / "prompt.yaml"
    prompt.write_text("version: '9'\nuser: 'Summarize {{ transcript }} for {{ region }}'\n")
    path = write_variant(tmp_path, set_in("prompt", str(prompt)))
    with pytest.raises(ConfigError) as raised:
        load_pipeline(path)
    assert "prompt" in str(raised.value)
    assert "region" in str(raised.value)


def test_missing_prompt_file_is_reported(tmp_path):
    path = write_variant(tmp_path, set_in("prompt", "prompts/nope.yaml"))
    with pytest.raises(ConfigError, match="prompt: no template file"):
        load_pipeline(path)


def test_model_param_the_family_lacks_is_reported(tmp_path):
    path = write_variant(tmp_path, set_in("model.params", {"max_tokens": 100, "response_format": "json"}))
    with pytest.raises(ConfigError, match=r"model\.params"):
        load_pipeline(path)


def test_name_must_match_the_file_name(tmp_path):
    path = write_variant(tmp_path, lambda raw: None, name="other_name")
    with pytest.raises(ConfigError, match="must match the file name"):
        load_pipeline(path)


def test_file_that_is_not_a_mapping_is_rejected(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pipeline(path)


def test_a_templated_tag_value_is_left_for_run_time(tmp_path):
    path = write_variant(tmp_path, set_in("jobs.tags", {"team": "{{ var.value.team }}"}))
    assert load_pipeline(path).jobs.tags == {"team": "{{ var.value.team }}"}


def test_more_tags_than_a_job_has_room_for_beside_the_submit_tasks_own_fail_at_import(tmp_path):
    from bedrock_batch.job_tags import MAX_JOB_TAGS, SUBMIT_TAGS

    room = MAX_JOB_TAGS - SUBMIT_TAGS
    path = write_variant(tmp_path, set_in("jobs.tags", {f"k{i}": "v" for i in range(room)}))
    assert len(load_pipeline(path).jobs.tags) == room
    path = write_variant(tmp_path, set_in("jobs.tags", {f"k{i}": "v" for i in range(room + 1)}))
    with pytest.raises(ConfigError, match=rf"jobs\.tags.*{room + 1} tags.*at most {room}"):
        load_pipeline(path)


def test_the_submit_tasks_own_tags_are_as_many_as_counted_and_reserved():
    from bedrock_batch.job_tags import RESERVED_TAG_PREFIX, SUBMIT_TAGS, prompt_version_tags, run_tags

    own = {**run_tags(dag_id="summarize_calls", run_id="manual__x"), **prompt_version_tags("v1")}
    assert len(own) == SUBMIT_TAGS
    assert all(key.startswith(RESERVED_TAG_PREFIX) for key in own)


def test_a_tag_key_the_submit_task_writes_is_refused(tmp_path):
    path = write_variant(tmp_path, set_in("jobs.tags", {"bedrock-batch:run-id": "mine"}))
    with pytest.raises(ConfigError, match="submit task's own"):
        load_pipeline(path)


def test_templated_values_are_left_for_run_time(tmp_path):
    path = write_variant(tmp_path, set_in("aws.role_arn", "{{ var.value.some_role }}"))
    assert load_pipeline(path).aws.role_arn == "{{ var.value.some_role }}"


def test_rendered_empty_role_names_the_setting():
    with pytest.raises(ConfigError, match=r"aws\.role_arn rendered empty"):
        check_runtime_values(
            {"aws.role_arn": "", "staging.input_bucket": "b-1", "staging.output_bucket": "b-2"}, pipeline="p"
        )


def test_rendered_invalid_bucket_names_the_setting():
    with pytest.raises(ConfigError, match=r"staging\.output_bucket"):
        check_runtime_values(
            {
                "aws.role_arn": "arn:aws:iam::123456789012:role/r",
                "staging.input_bucket": "good-bucket",
                "staging.output_bucket": "BAD_bucket",
            },
            pipeline="p",
        )


def _settings(model: type, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, name) of every setting of ``model`` and of the sections under it."""
    from pydantic import BaseModel

    found = []
    for name, field in model.model_fields.items():
        found.append((f"{path}{name}", name))
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            found.extend(_settings(field.annotation, f"{path}{name}."))
    return found


def test_every_setting_is_documented_or_shown_in_the_shipped_config():
    """A setting a user cannot find is one they cannot use: README or operations.md name it in
    backticks, or the shipped pipeline file spells it out."""
    import yaml

    from bedrock_batch.config import INCLUDE_DIR, PipelineConfig

    root = INCLUDE_DIR.parent
    docs = (root / "README.md").read_text() + (root / "docs" / "operations.md").read_text()
    shipped = yaml.safe_load((INCLUDE_DIR / "pipelines" / "summarize_calls.yaml").read_text())

    def in_shipped(dotted: str) -> bool:
        section: object = shipped
        for part in dotted.split("."):
            if not isinstance(section, dict) or part not in section:
                return False
            section = section[part]
        return True

    settings = _settings(PipelineConfig)
    assert len(settings) > 40
    undocumented = [dotted for dotted, name in settings if f"`{name}`" not in docs and not in_shipped(dotted)]
    assert undocumented == []


CUSTOM_HAIKU = (
    "arn:aws:bedrock:us-east-1:123456789012:custom-model/"
    "anthropic.claude-3-5-haiku-20241022-v1:0/a1b2c3d4e5f6"
)
DEPLOYMENT = "arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/a1b2c3d4e5f6"


def custom_model(**small_batch):
    def change(raw):
        raw["model"]["id"] = CUSTOM_HAIKU
        raw.setdefault("small_batch", {}).update(small_batch)

    return change


@pytest.mark.parametrize("policy", ["carry_over", "on_demand"])
def test_a_custom_model_that_may_go_on_demand_needs_an_on_demand_model(tmp_path, policy):
    path = write_variant(tmp_path, custom_model(policy=policy))
    with pytest.raises(ConfigError, match=r"small_batch\.on_demand_model_id: .*custom model deployment"):
        load_pipeline(path)


def test_a_custom_model_loads_with_a_deployment_to_call_on_demand(tmp_path):
    config = load_pipeline(write_variant(tmp_path, custom_model(on_demand_model_id=DEPLOYMENT)))
    assert (config.model.id, config.small_batch.on_demand_model_id) == (CUSTOM_HAIKU, DEPLOYMENT)


def test_a_custom_model_loads_when_short_batches_fail_instead(tmp_path):
    assert load_pipeline(write_variant(tmp_path, custom_model(policy="fail"))).model.id == CUSTOM_HAIKU


def test_an_on_demand_model_of_another_family_fails_at_import(tmp_path):
    path = write_variant(tmp_path, custom_model(on_demand_model_id="amazon.nova-lite-v1:0"))
    with pytest.raises(ConfigError, match=r"small_batch\.on_demand_model_id: 'amazon\.nova-lite-v1:0' is of"):
        load_pipeline(path)


def test_a_custom_model_named_as_its_own_on_demand_model_fails_at_import(tmp_path):
    path = write_variant(tmp_path, custom_model(on_demand_model_id=CUSTOM_HAIKU))
    with pytest.raises(ConfigError, match=r"small_batch\.on_demand_model_id: .*does not take on demand"):
        load_pipeline(path)


def test_a_runs_own_model_is_called_on_demand_not_the_configured_models_on_demand_model(tmp_path):
    config = load_pipeline(write_variant(tmp_path, custom_model(on_demand_model_id=DEPLOYMENT)))
    assert on_demand_model_id(config, CUSTOM_HAIKU) == DEPLOYMENT
    sonnet = "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert on_demand_model_id(config, sonnet) == sonnet
    other_custom = CUSTOM_HAIKU.replace("a1b2c3d4e5f6", "b1b2b3b4b5b6")
    with pytest.raises(ConfigError, match=rf"{re.escape(other_custom)}.*make it model\.id in the config"):
        on_demand_model_id(config, other_custom)


APPLICATION_PROFILE = "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/a1b2c3d4e5f6"


def test_a_model_arn_that_does_not_name_its_model_needs_its_context_window(tmp_path):
    def converse(raw):
        raw["model"].update(id=APPLICATION_PROFILE, invocation_type="Converse")

    with pytest.raises(ConfigError, match=r"model\.context_tokens: .*an application inference profile"):
        load_pipeline(write_variant(tmp_path, converse))

    def with_window(raw):
        converse(raw)
        raw["model"]["context_tokens"] = 64_000

    assert load_pipeline(write_variant(tmp_path, with_window)).model.id == APPLICATION_PROFILE


def alerts(*entries):
    def change(raw):
        raw["alerts"] = {"on_failure": list(entries)}

    return change


FILE_NOTIFIER = "tests.fixtures.notifiers.FileNotifier"


def test_a_notifier_that_cannot_be_imported_fails_at_import_naming_the_entry(tmp_path):
    path = write_variant(
        tmp_path,
        alerts({"notifier": FILE_NOTIFIER, "kwargs": {"path": "a"}}, {"notifier": "no.such.Notifier"}),
    )
    with pytest.raises(
        ConfigError, match=r"alerts\.on_failure\[1\]\.notifier: cannot import 'no\.such\.Notifier'"
    ):
        load_pipeline(path)


def test_a_class_that_is_not_a_notifier_fails_at_import(tmp_path):
    path = write_variant(tmp_path, alerts({"notifier": "collections.OrderedDict"}))
    with pytest.raises(ConfigError, match=r"alerts\.on_failure\[0\]\.notifier: .*not an Airflow notifier"):
        load_pipeline(path)


def test_arguments_a_notifier_refuses_fail_at_import(tmp_path):
    path = write_variant(
        tmp_path, alerts({"notifier": FILE_NOTIFIER, "kwargs": {"to": "oncall@example.com"}})
    )
    with pytest.raises(ConfigError, match=r"alerts\.on_failure\[0\]\.kwargs: .*FileNotifier refused them"):
        load_pipeline(path)


def test_the_shipped_examples_smtp_subject_renders_for_a_run_with_no_logical_date(tmp_path):
    """The example in summarize_calls.yaml uses only what every run's context has (no ``ds``)."""
    from airflow.sdk import DAG

    from bedrock_batch.alerts import build_notifiers

    example = re.search(r"# alerts:\n((?:#.*\n)+)", SHIPPED.read_text()).group(0)
    raw = yaml.safe_load("\n".join(line.removeprefix("#").removeprefix(" ") for line in example.splitlines()))
    config = load_pipeline(write_variant(tmp_path, alerts(*raw["alerts"]["on_failure"])))
    (notifier,) = build_notifiers(config.alerts.on_failure)
    with DAG("summarize_calls", schedule=None, render_template_as_native_obj=True) as dag:
        pass
    notifier.render_template_fields({"dag": dag, "run_id": "manual__2026-12-29T00:00:00+00:00"})
    assert notifier.subject == "summarize_calls failed: run manual__2026-12-29T00:00:00+00:00"
