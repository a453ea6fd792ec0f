"""Submit, stop and list operators against the stand-in: idempotency, re-attach and adoption."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

import bedrock_batch.operators as operators
from bedrock_batch.hooks import TOKEN_PATTERN
from bedrock_batch.operators import (
    BedrockBatchListJobsOperator,
    BedrockBatchStopJobOperator,
    BedrockBatchSubmitOperator,
    derive_client_request_token,
)
from tests.integration.bedrock.support import MODEL_ID, RECORDS, ROLE_ARN, wait_for_status, wait_terminal


class DictStateStore:
    """Stands in for Airflow's task_state_store (a per-task-instance key/value store)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


JOB_ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job"


def context(store: DictStateStore | None = None, run_id: str = "scheduled__2026-01-01") -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": SimpleNamespace(dag_id="summaries", stats_tags={}), "run_id": run_id}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


@pytest.fixture
def plan_job(bedrock_stage) -> dict[str, Any]:
    input_uri, output_uri = bedrock_stage
    return {
        "index": 1,
        "job_name": f"sub-{uuid.uuid4().hex[:12]}",
        "input_s3_uri": input_uri,
        "output_s3_uri": output_uri,
        "map_s3_uri": input_uri.replace("/in/", "/maps/"),
        "records": RECORDS,
        "bytes": 12345,
    }


def submit(job: dict[str, Any], **kwargs: Any) -> BedrockBatchSubmitOperator:
    kwargs.setdefault("tags", {"pipeline": "it"})
    return BedrockBatchSubmitOperator(
        task_id="submit", job=job, role_arn=ROLE_ARN, model_id=MODEL_ID, **kwargs
    )


def creates(local_aws) -> int:
    return local_aws.calls().count("bedrock:CreateModelInvocationJob")


def jobs_named(local_aws, name: str) -> int:
    return sum(1 for job in local_aws.admin.jobs() if job["job_name"].startswith(f"{name}-"))


def test_derived_token_is_64_hex_valid_and_stable():
    args = {
        "dag_id": "d",
        "run_id": "r",
        "job_name": "j",
        "input_s3_uri": "s3://b/i/",
        "records": 100,
        "size_bytes": 7,
    }
    token = derive_client_request_token(**args)
    assert len(token) == 64
    assert TOKEN_PATTERN.fullmatch(token)
    assert derive_client_request_token(**args) == token
    assert derive_client_request_token(**{**args, "records": 101}) != token
    assert derive_client_request_token(**{**args, "run_id": "r2"}) != token


def test_a_job_generation_changes_the_token_and_the_first_keeps_the_old_one():
    args = {"dag_id": "d", "run_id": "r", "job_name": "j", "input_s3_uri": "s3://b/i/", "records": 100}
    first = derive_client_request_token(**args, size_bytes=7)
    assert derive_client_request_token(**args, size_bytes=7, generation=0) == first
    assert derive_client_request_token(**args, size_bytes=7, generation=1) != first


def test_submit_returns_a_small_result_without_waiting(plan_job, local_aws):
    result = submit(plan_job).execute(context(DictStateStore()))
    assert result["job_name"] == f"{plan_job['job_name']}-{result['client_request_token'][:8]}"
    assert result["records"] == RECORDS
    assert result["job_arn"].endswith("/" + result["job_id"])
    assert result["status"] in ("Submitted", "Validating", "Scheduled", "InProgress", "Completed")
    assert len(result["client_request_token"]) == 64
    bedrock_calls = [call for call in local_aws.calls() if call.startswith("bedrock:")]
    assert bedrock_calls == ["bedrock:CreateModelInvocationJob", "bedrock:GetModelInvocationJob"]


def test_resubmitting_the_same_run_gives_the_same_job(plan_job, local_aws):
    first = submit(plan_job).execute(context(DictStateStore()))
    second = submit(plan_job).execute(context(DictStateStore()))
    assert first["job_arn"] == second["job_arn"]
    assert jobs_named(local_aws, plan_job["job_name"]) == 1


def test_retried_task_reattaches_to_the_running_job_without_creating(plan_job, local_aws, bedrock_hook):
    store = DictStateStore()
    first = submit(plan_job, tags={"local-aws:fault": "stick"}).execute(context(store))
    assert store.values["bedrock_job_arn"] == first["job_arn"]
    wait_for_status(bedrock_hook, first["job_arn"], {"Scheduled"})
    local_aws.admin.clear_calls()
    retried = submit(plan_job, tags={"local-aws:fault": "stick"}).execute(context(store))
    assert retried["job_arn"] == first["job_arn"]
    assert retried["status"] == "Scheduled"
    assert creates(local_aws) == 0
    bedrock_hook.stop_job(first["job_arn"])


def test_a_cleared_run_with_other_input_refuses_a_second_job_while_the_first_still_runs(
    plan_job, local_aws, bedrock_hook
):
    from airflow.sdk.exceptions import AirflowFailException

    store = DictStateStore()
    first = submit(plan_job, tags={"local-aws:fault": "stick"}).execute(context(store))
    wait_for_status(bedrock_hook, first["job_arn"], {"Scheduled"})
    restaged = {**plan_job, "records": plan_job["records"] - 1}  # prepare staged other rows this time
    local_aws.admin.clear_calls()

    with pytest.raises(AirflowFailException, match=rf"{first['job_arn']} .* is still Scheduled .* twice"):
        submit(restaged).execute(context(store))
    assert creates(local_aws) == 0

    bedrock_hook.stop_job(first["job_arn"])
    wait_terminal(bedrock_hook, first["job_arn"])
    second = submit(restaged).execute(context(store))
    assert second["job_arn"] != first["job_arn"] and creates(local_aws) == 1


def test_a_stored_job_bedrock_no_longer_knows_is_forgotten_and_the_job_submitted(plan_job, local_aws):
    """Cleared long after (past Bedrock's job retention), or after the region changed."""
    store = DictStateStore()
    store.set(BedrockBatchSubmitOperator.external_id_key, f"{JOB_ARN_PREFIX}/gone00000000")

    result = submit(plan_job).execute(context(store))

    assert creates(local_aws) == 1
    assert store.get(BedrockBatchSubmitOperator.external_id_key) == result["job_arn"]


def test_retried_task_returns_a_finished_job_without_creating(plan_job, local_aws, bedrock_hook):
    store = DictStateStore()
    first = submit(plan_job).execute(context(store))
    wait_terminal(bedrock_hook, first["job_arn"])
    local_aws.admin.clear_calls()
    retried = submit(plan_job).execute(context(store))
    assert (retried["job_arn"], retried["status"]) == (first["job_arn"], "Completed")
    assert creates(local_aws) == 0


def test_without_a_state_store_an_existing_job_is_found_by_name(plan_job, local_aws):
    first = submit(plan_job).execute(context(store=None))
    local_aws.admin.clear_calls()
    again = submit(plan_job).execute(context(store=None))
    assert again["job_arn"] == first["job_arn"]
    assert creates(local_aws) == 0


def test_a_create_that_raises_after_bedrock_accepted_is_adopted(plan_job, local_aws):
    # The stand-in has no "500 after commit" fault, so the client is made to fail after the
    # response arrives: Bedrock created the job, the caller saw a read timeout.
    task = submit(plan_job)

    def lose_the_response(**_: Any) -> None:
        raise ReadTimeoutError(endpoint_url=local_aws.endpoint_url)

    task.hook.conn.meta.events.register("after-call.bedrock.CreateModelInvocationJob", lose_the_response)
    result = task.execute(context(DictStateStore()))
    assert jobs_named(local_aws, plan_job["job_name"]) == 1
    assert result["job_arn"] == next(
        job["job_arn"]
        for job in local_aws.admin.jobs()
        if job["job_name"].startswith(f"{plan_job['job_name']}-")
    )


def test_a_create_bedrock_refused_fails_at_once_naming_the_job_without_a_search(plan_job, local_aws):
    from airflow.sdk.exceptions import AirflowFailException

    task = BedrockBatchSubmitOperator(
        task_id="submit", job=plan_job, role_arn=ROLE_ARN, model_id="unknown.model-v1"
    )
    local_aws.admin.clear_calls()
    with pytest.raises(
        AirflowFailException,
        match=rf"refused batch job {plan_job['job_name']}-\w{{8}} \(ValidationException\).*model identifier",
    ):
        task.execute(context(DictStateStore()))
    assert jobs_named(local_aws, plan_job["job_name"]) == 0
    assert "bedrock:ListModelInvocationJobs" not in local_aws.calls()


def test_a_create_over_the_jobs_in_flight_quota_is_rescheduled_not_failed(plan_job, local_aws_clean):
    from airflow.sdk.exceptions import AirflowRescheduleException

    local_aws_clean.admin.set_quotas(max_concurrent_jobs=0)  # every job in flight counts: none fit
    before = datetime.now(UTC)
    with pytest.raises(AirflowRescheduleException) as caught:
        submit(plan_job, quota_retry_seconds=300).execute(context(DictStateStore()))
    assert 299 <= (caught.value.reschedule_date - before).total_seconds() <= 330
    assert jobs_named(local_aws_clean, plan_job["job_name"]) == 0
    local_aws_clean.admin.reset_quotas()
    assert submit(plan_job).execute(context(DictStateStore()))["job_arn"]


def test_a_quota_that_stays_full_fails_the_submit_naming_the_job_after_the_longest_wait(
    plan_job, local_aws_clean
):
    from airflow.sdk.exceptions import AirflowFailException

    local_aws_clean.admin.set_quotas(max_concurrent_jobs=0)
    rescheduled_three_times = {**context(DictStateStore()), "task_reschedule_count": 3}
    task = submit(plan_job, quota_retry_seconds=300, quota_max_wait_seconds=900)
    with pytest.raises(
        AirflowFailException, match=rf"stayed full for 15 minutes; job {plan_job['job_name']}-"
    ):
        task.execute(rescheduled_three_times)


def test_a_create_that_failed_otherwise_is_raised_for_a_retry_after_searching_for_the_job(
    plan_job, local_aws, monkeypatch
):
    monkeypatch.setattr(operators, "_ADOPT_PAUSE", 0.01)
    task = submit(plan_job)

    def throttled(**_: Any) -> None:
        raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "slow down"}}, "Create")

    task.hook.conn.meta.events.register("before-call.bedrock.CreateModelInvocationJob", throttled)
    local_aws.admin.clear_calls()
    with pytest.raises(ClientError, match="slow down"):
        task.execute(context(DictStateStore()))
    assert "bedrock:ListModelInvocationJobs" in local_aws.calls()
    assert jobs_named(local_aws, plan_job["job_name"]) == 0


def test_an_explicit_client_request_token_is_used(plan_job, bedrock_hook):
    result = submit(plan_job, client_request_token="explicit-token-1").execute(context(DictStateStore()))
    assert bedrock_hook.get_job(result["job_arn"])["clientRequestToken"] == "explicit-token-1"


def test_a_job_missing_plan_keys_fails_without_retry_naming_them(plan_job):
    from airflow.sdk.exceptions import AirflowFailException

    del plan_job["output_s3_uri"]
    with pytest.raises(AirflowFailException, match="output_s3_uri"):
        submit(plan_job).execute(context(DictStateStore()))


def test_stop_operator_stops_a_running_job_and_tolerates_a_finished_one(new_job, bedrock_hook):
    running = new_job(fault="stick")
    result = BedrockBatchStopJobOperator(task_id="stop", job_arn=running).execute({})
    assert result["job_arn"] == running and result["status"] in ("Stopping", "Stopped")
    assert wait_terminal(bedrock_hook, running)["status"] == "Stopped"
    again = BedrockBatchStopJobOperator(task_id="stop", job_arn=running).execute({})
    assert again["status"] == "Stopped"


def test_list_operator_returns_small_dicts(new_job, bedrock_hook):
    marker = uuid.uuid4().hex[:8]
    arn = new_job(name=f"ls-{marker}")
    wait_terminal(bedrock_hook, arn)
    listed = BedrockBatchListJobsOperator(
        task_id="list",
        name_contains=marker,
        status="Completed",
        submitted_after=(datetime.now(UTC) - timedelta(hours=1)).isoformat(),
    ).execute({})
    assert len(listed) == 1
    job = listed[0]
    assert (job["job_arn"], job["job_name"], job["status"]) == (arn, f"ls-{marker}", "Completed")
    assert datetime.fromisoformat(job["submit_time"]) <= datetime.now(UTC)
    assert job["success_records"] == RECORDS


def test_list_operator_rejects_a_bad_timestamp_naming_the_setting(aws_env):
    from bedrock_batch.errors import ConfigError

    with pytest.raises(ConfigError, match="submitted_before"):
        BedrockBatchListJobsOperator(task_id="list", submitted_before="yesterday").execute({})


def test_collect_never_queues_a_planned_job_whose_earlier_try_still_runs_on_its_records(
    plan_job, local_aws, bedrock_hook
):
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException

    from bedrock_batch.pipeline_operators import CollectResultsOperator
    from bedrock_batch.staging import StagedJob

    earlier = submit(plan_job, tags={"local-aws:fault": "stick"}).execute(context(DictStateStore()))
    restaged = {**plan_job, "records": plan_job["records"] - 1, "files": [], "est_input_tokens": 0}
    with DAG("summaries", schedule=None):
        collect = CollectResultsOperator(task_id="collect", pipeline="summarize_calls", job=restaged)
    ti = SimpleNamespace(map_index=-1, xcom_pull=lambda **_: None)

    try:
        with pytest.raises(AirflowException, match=rf"{earlier['job_name']} of an earlier try .* still run"):
            collect._job_info({"run_id": "scheduled__2026-01-01", "ti": ti}, StagedJob.from_dict(restaged))
    finally:
        bedrock_hook.stop_job(earlier["job_arn"])
    wait_terminal(bedrock_hook, earlier["job_arn"])
    assert (
        collect._job_info({"run_id": "scheduled__2026-01-01", "ti": ti}, StagedJob.from_dict(restaged))
        is None
    )


def test_collect_reschedules_while_its_job_is_stopping_and_fails_naming_it_past_the_limit(
    plan_job, local_aws, bedrock_hook
):
    """Marking a deferred wait failed stops the job, and collect runs at once: Stopping is not an end."""
    from airflow.sdk import DAG
    from airflow.sdk.exceptions import AirflowException, AirflowRescheduleException

    from bedrock_batch.pipeline_operators import (
        STOPPING_MAX_WAIT_SECONDS,
        STOPPING_RECHECK_SECONDS,
        CollectResultsOperator,
    )
    from bedrock_batch.staging import StagedJob

    tags = {"local-aws:fault": "stick", "local-aws:stopping-seconds": "20"}
    submitted = submit(plan_job, tags=tags).execute(context(DictStateStore()))
    staged = StagedJob.from_dict({**plan_job, "files": [], "est_input_tokens": 0})
    with DAG("summaries", schedule=None):
        collect = CollectResultsOperator(task_id="collect", pipeline="summarize_calls", job=plan_job)
    ti = SimpleNamespace(map_index=-1, xcom_pull=lambda **_: submitted)
    wait_for_status(bedrock_hook, submitted["job_arn"], {"Scheduled"})
    bedrock_hook.stop_job(submitted["job_arn"])

    with pytest.raises(AirflowRescheduleException):
        collect._job_info({"run_id": "scheduled__2026-01-01", "ti": ti}, staged)
    reschedules = STOPPING_MAX_WAIT_SECONDS // STOPPING_RECHECK_SECONDS
    past_the_limit = {"run_id": "scheduled__2026-01-01", "ti": ti, "task_reschedule_count": reschedules}
    with pytest.raises(AirflowException, match=rf"{submitted['job_arn']} is still Stopping"):
        collect._job_info(past_the_limit, staged)
    assert bedrock_hook.get_job(submitted["job_arn"])["status"] == "Stopping"


def test_prepare_counts_as_this_runs_jobs_only_those_reading_this_deployments_input(local_aws, bedrock_hook):
    """Staging and production in one AWS account name a run's jobs alike; their input folders differ."""
    from airflow.sdk import DAG

    from bedrock_batch.pipeline_operators import PrepareBatchOperator
    from bedrock_batch.prepare import run_job_marker

    run_id = f"scheduled__2026-02-01T00:00:00+00:00-{uuid.uuid4().hex[:6]}"
    marker = run_job_marker("summarize_calls", run_id)
    with DAG("summarize_calls", schedule=None):
        prepare = PrepareBatchOperator(
            task_id="prepare",
            pipeline="summarize_calls",
            role_arn=ROLE_ARN,
            input_bucket="prod-input",
            output_bucket="prod-output",
        )
    arns = {}
    for deployment in ("prod", "staging"):
        folder = f"s3://{deployment}-input/bedrock-batch/input/summarize_calls/{marker}x/jobs/j000/"
        arns[deployment] = bedrock_hook.create_job(
            job_name=f"summarize-calls-{marker}000-{deployment}",
            role_arn=ROLE_ARN,
            model_id=MODEL_ID,
            input_s3_uri=folder,
            output_s3_uri=f"s3://{deployment}-output/out/",
            client_request_token=uuid.uuid4().hex,
            tags={},
        )

    assert [job["jobArn"] for job in prepare._jobs_of_run(run_id)] == [arns["prod"]]


def test_submit_tags_the_job_with_the_prompt_version_its_plan_job_names(plan_job, bedrock_hook):
    from bedrock_batch.job_tags import PROMPT_VERSION_TAG

    result = submit({**plan_job, "prompt_version": "v3-abc"}).execute(context(DictStateStore()))

    assert bedrock_hook.get_job_tags(result["job_arn"])[PROMPT_VERSION_TAG] == "v3-abc"


def test_plain_tag_values_reach_the_job_as_written_when_the_dag_renders_native_objects(
    plan_job, bedrock_hook
):
    """Native rendering would read "1e3" as 1000.0 and "0x1F" as 31; a cost-center tag must not change."""
    from airflow.sdk import DAG

    written = {"cost-center": "1e3", "code": "0x1F", "v": "1_000", "team": "data"}
    with DAG("summaries", schedule=None, render_template_as_native_obj=True):
        op = submit(plan_job, tags={**written, "run": "{{ run_id }}"})
    ctx = context(DictStateStore())
    op.render_template_fields(ctx)

    tags = bedrock_hook.get_job_tags(op.execute(ctx)["job_arn"])

    assert {key: tags[key] for key in written} == written
    assert tags["run"] == "scheduled__2026-01-01"
