"""The pure parts of the ops library: job tags, orphan rules, the staged layout, input checks."""

from __future__ import annotations

import datetime as dt

import pytest

from bedrock_batch import ops
from bedrock_batch.errors import ConfigError
from bedrock_batch.job_tags import (
    DAG_ID_TAG,
    RUN_ID_TAG,
    RunRef,
    decode_tag_value,
    encode_tag_value,
    run_ref,
    run_tags,
)

TAG_VALUE = r"[a-zA-Z0-9\s._:/=+@-]*"  # botocore's TagValue pattern
JOB_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


@pytest.mark.parametrize(
    "run_id",
    [
        "scheduled__2026-01-01T00:00:00+00:00",
        "manual__2026-11-21T23:42:23.148840+00:00",
        "backfill__2026-01-02T00:00:00+00:00",
        "my~run with spaces@and#hash",
        "ünïcode-run",
    ],
)
def test_run_ids_survive_the_trip_through_a_tag_value(run_id):
    import re

    value = encode_tag_value(run_id)
    assert re.fullmatch(TAG_VALUE, value)
    assert decode_tag_value(value) == run_id


def test_default_run_ids_are_stored_unchanged():
    assert encode_tag_value("manual__2026-01-01T00:00:00+00:00") == "manual__2026-01-01T00:00:00+00:00"


def test_a_run_id_too_long_for_a_tag_gives_no_run_tags():
    assert run_tags(dag_id="d", run_id="#" * 100) == {}


def test_run_ref_reads_bedrocks_tag_list():
    tags = [{"key": key, "value": value} for key, value in run_tags(dag_id="d", run_id="r~1").items()]
    assert run_ref(tags) == RunRef("d", "r~1")


def test_jobs_without_both_run_tags_belong_to_no_run():
    assert run_ref({"team": "x"}) is None
    assert run_ref({DAG_ID_TAG: "d"}) is None
    assert run_ref({RUN_ID_TAG: "r"}) is None


def test_run_tags_this_project_did_not_escape_belong_to_no_run():
    assert run_ref({DAG_ID_TAG: "d", RUN_ID_TAG: "@C3"}) is None  # a lone UTF-8 lead byte


def test_a_missing_run_tracks_nothing():
    assert not ops.run_tracks_job(run_state=None, submitted_arns=[JOB_ARN], job_arn=JOB_ARN)


def test_a_finished_run_tracks_only_the_jobs_its_submit_tasks_returned():
    for state in ("success", "failed"):
        assert ops.run_tracks_job(run_state=state, submitted_arns=[JOB_ARN], job_arn=JOB_ARN)
        assert not ops.run_tracks_job(run_state=state, submitted_arns=[], job_arn=JOB_ARN)


def test_an_unfinished_run_tracks_every_job_tagged_with_it():
    for state in ("queued", "running"):
        assert ops.run_tracks_job(run_state=state, submitted_arns=[], job_arn=JOB_ARN)


def staged_summary(input_uri: str, name: str = "summarize-calls-20261110-abc-j000") -> dict:
    return {
        "jobArn": JOB_ARN,
        "jobName": name,
        "inputDataConfig": {"s3InputDataConfig": {"s3Uri": input_uri}},
        "outputDataConfig": {"s3OutputDataConfig": {"s3Uri": "s3://out/p/run/"}},
        "totalRecordCount": 7,
    }


def test_the_record_map_sits_beside_the_jobs_folder_of_the_run():
    name = "summarize-calls-20261110-abc-j000"
    staged = ops.staged_job_from(staged_summary(f"s3://in/pfx/run-x/jobs/{name}/", name))
    assert staged.map_s3_uri == f"s3://in/pfx/run-x/maps/{name}.jsonl"
    assert staged.output_s3_uri == "s3://out/p/run/"
    assert staged.records == 7


def test_a_job_named_as_the_submit_task_names_it_maps_back_to_its_planned_folder():
    from bedrock_batch.operators import bedrock_job_name

    planned = "summarize-calls-20261110-abc-j002"
    name = bedrock_job_name(planned, "7627bce0" + "f" * 56)
    staged = ops.staged_job_from(staged_summary(f"s3://in/pfx/run-x/jobs/{planned}/", name))
    assert staged.job_name == planned
    assert staged.map_s3_uri == f"s3://in/pfx/run-x/maps/{planned}.jsonl"


def test_a_job_whose_name_is_not_its_folders_planned_job_cannot_be_adopted():
    planned = "summarize-calls-20261110-abc-j002"
    for name in ("summarize-calls-20261110-abc-j003-7627bce0", f"{planned}-notatokn", f"{planned}x"):
        with pytest.raises(ops.AdoptError, match=f"belongs to planned job '{planned}'"):
            ops.staged_job_from(staged_summary(f"s3://in/pfx/run-x/jobs/{planned}/", name))


def test_a_job_staged_elsewhere_cannot_be_adopted():
    with pytest.raises(ops.AdoptError, match="not a folder staged by this project"):
        ops.staged_job_from(staged_summary("s3://in/somewhere/else/"))


def test_stop_wants_a_model_invocation_job_arn():
    assert ops.check_job_arn(f" {JOB_ARN} ") == JOB_ARN
    for bad in (None, "", "abc123", "arn:aws:s3:::bucket/key"):
        with pytest.raises(ConfigError, match="model-invocation-job/<job id>"):
            ops.check_job_arn(bad)


def test_listing_rejects_bad_filters_before_calling_aws():
    with pytest.raises(ConfigError, match="status must be one of"):
        ops.list_jobs(None, status="Done")
    with pytest.raises(ConfigError, match="max_results"):
        ops.list_jobs(None, max_results=0)
    with pytest.raises(ConfigError, match="sort_order"):
        ops.list_jobs(None, sort_order="Newest")
    with pytest.raises(ConfigError, match="ISO 8601"):
        ops.list_jobs(None, submitted_after="yesterday")
    with pytest.raises(ConfigError, match="must be before"):
        ops.list_jobs(None, submitted_after="2026-01-02", submitted_before="2026-01-01")


def test_times_without_an_offset_are_utc():
    assert ops.parse_time("2026-01-02", "x") == dt.datetime(2026, 1, 2, tzinfo=dt.UTC)


def test_reconcile_modes_are_checked():
    with pytest.raises(ConfigError, match="reconcile mode"):
        ops.reconcile(None, is_tracked=lambda ref, arn: True, mode="delete")
    with pytest.raises(ConfigError, match="needs an adopter"):
        ops.reconcile(None, is_tracked=lambda ref, arn: True, mode="adopt")


def test_job_rows_are_small_and_show_progress():
    row = ops.job_row(
        {
            "jobArn": JOB_ARN,
            "jobName": "j",
            "status": "InProgress",
            "totalRecordCount": 200,
            "processedRecordCount": 50,
            "message": "x" * 1000,
            "submitTime": dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        }
    )
    assert row["percent"] == 25
    assert len(row["message"]) == 200
    assert row["submit_time"] == "2026-01-01T00:00:00+00:00"


def test_the_log_table_has_a_header_and_a_line_per_job():
    table = ops.format_table(
        [{"status": "Failed", "job_name": "a"}, {"status": "Completed", "job_name": "bb"}]
    )
    lines = table.splitlines()
    assert len(lines) == 4
    assert lines[0].split()[:2] == ["submit_time", "status"]
    assert ops.format_table([]) == "(no jobs)"


def test_the_shipped_pipeline_is_found_by_its_dag_id():
    target = ops.pipeline_target("summarize_calls")
    assert target is not None
    assert target.config.name == "summarize_calls"
    assert target.warehouse.conn_id == target.config.source.conn_id
    assert target.owner == {}
    assert ops.pipeline_target("no_such_pipeline") is None
    assert ops.pipeline_target("../summarize_calls") is None


def test_a_name_filter_is_checked_as_bedrock_would_and_names_the_field():
    assert ops.check_name_contains(" summarize-calls-20261110 ") == "summarize-calls-20261110"
    assert ops.check_name_contains("") is None and ops.check_name_contains(None) is None
    with pytest.raises(ConfigError, match=r"got 'summarize_calls' \(job names use '-'"):
        ops.check_name_contains("summarize_calls")
    with pytest.raises(ConfigError, match="name_contains"):
        ops.check_name_contains("-leading-dash")


def test_request_mistakes_are_form_errors_and_aws_refusals_of_the_request_only():
    from botocore.exceptions import ClientError

    def aws(code: str) -> ClientError:
        return ClientError({"Error": {"Code": code, "Message": "no such job"}}, "StopModelInvocationJob")

    assert ops.request_mistake(ConfigError("job_arn: bad")) == "job_arn: bad"
    assert ops.request_mistake(aws("ResourceNotFoundException")) == "ResourceNotFoundException: no such job"
    assert ops.request_mistake(aws("ThrottlingException")) is None
    assert ops.request_mistake(RuntimeError("network")) is None


def test_a_jobs_region_is_read_from_its_arn():
    from bedrock_batch.hooks import BedrockBatchHook

    arn = "arn:aws:bedrock:eu-west-1:123456789012:model-invocation-job/abc123def456"
    assert BedrockBatchHook.region_from_arn(arn) == "eu-west-1"
    assert BedrockBatchHook.job_id_from_arn(arn) == "abc123def456"
    with pytest.raises(ConfigError, match="not a Bedrock model-invocation-job ARN"):
        BedrockBatchHook.region_from_arn("arn:aws:s3:::bucket")


def test_without_a_pipeline_aws_is_asked_through_aws_default():
    assert ops.aws_access(None) == ops.AwsAccess("aws_default", None)
    assert ops.aws_access("", " eu-west-1 ") == ops.AwsAccess("aws_default", "eu-west-1")


def test_a_named_pipeline_is_asked_through_its_own_connection_and_region(own_connection_pipeline):
    assert ops.aws_access("calls_eu") == ops.AwsAccess("aws_eu_account", "eu-central-1")
    assert ops.aws_access("summarize_calls") == ops.AwsAccess("aws_default", None)


def test_a_region_given_wins_over_the_pipelines(own_connection_pipeline):
    assert ops.aws_access("calls_eu", "us-west-2") == ops.AwsAccess("aws_eu_account", "us-west-2")


def test_a_templated_pipeline_region_is_rendered_or_must_be_given(own_connection_pipeline):
    own_connection_pipeline(region="{{ var.value.calls_region }}")
    rendered = ops.aws_access("calls_eu", render=lambda value: "ap-southeast-2")
    assert rendered == ops.AwsAccess("aws_eu_account", "ap-southeast-2")
    with pytest.raises(
        ConfigError, match=r"pipeline 'calls_eu': its aws.region is a template .*give the region"
    ):
        ops.aws_access("calls_eu")
    assert ops.aws_access("calls_eu", "eu-west-3").region == "eu-west-3"


def test_a_pipeline_region_that_is_no_region_name_is_refused_naming_the_pipeline(own_connection_pipeline):
    own_connection_pipeline(region="{{ var.value.calls_region }}")
    with pytest.raises(ConfigError, match=r"pipeline 'calls_eu': aws.region: region 'frankfurt' is not"):
        ops.aws_access("calls_eu", render=lambda value: "frankfurt")


def test_an_unknown_pipeline_is_refused_naming_the_known_ones(own_connection_pipeline):
    with pytest.raises(
        ConfigError,
        match=r"pipeline 'calls_us': no such pipeline config \(known: calls_eu, summarize_calls\)",
    ):
        ops.aws_access("calls_us")


class TagReader:
    """Stands in for the hook's tag read: the point here is the page's cache, not AWS."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_job_tags(self, job_arn: str) -> dict[str, str]:
        self.asked.append(job_arn)
        return {}


def test_the_tag_cache_returns_every_job_it_knows_even_when_a_lookup_overflows_it():
    from bedrock_batch.plugin import RunRefCache

    cache, reader = RunRefCache(size=2), TagReader()
    cache.lookup(reader, ["a", "b"])

    found = cache.lookup(reader, ["a", "b", "c"])  # "c" overflows the cache, which is emptied

    assert found == {"a": None, "b": None, "c": None}
    assert reader.asked == ["a", "b", "c"]
