"""BedrockBatchHook against the local stand-in over HTTP (real boto3 and aiobotocore)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from botocore.exceptions import ClientError

from bedrock_batch.errors import ConfigError
from bedrock_batch.hooks import (
    FAILED_STATUSES,
    BedrockBatchHook,
    is_transient_error,
    job_deadline,
    job_progress,
)
from tests.integration.bedrock.support import MODEL_ID, RECORDS, ROLE_ARN, wait_for_status, wait_terminal


def test_hook_uses_adaptive_retries_and_connection_endpoint(bedrock_hook, local_aws):
    client = bedrock_hook.conn
    assert client.meta.endpoint_url == local_aws.endpoint_url
    # botocore counts max_attempts as retries: 10 retries are 11 attempts in all.
    assert client.meta.config.retries == {"mode": "adaptive", "total_max_attempts": 11}


def test_connection_config_kwargs_win_over_default_retries(aws_env, monkeypatch, local_aws):
    import json

    conn = {
        "conn_type": "aws",
        "extra": {
            "endpoint_url": local_aws.endpoint_url,
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 2}, "connect_timeout": 3},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_TUNED", json.dumps(conn))
    config = BedrockBatchHook(aws_conn_id="aws_tuned").conn.meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert config.connect_timeout == 3


def test_create_job_sends_the_request_bedrock_expects(bedrock_hook, bedrock_stage):
    input_uri, output_uri = bedrock_stage
    name = f"req-{uuid.uuid4().hex[:10]}"
    job_arn = bedrock_hook.create_job(
        job_name=name,
        role_arn=ROLE_ARN,
        model_id=MODEL_ID,
        input_s3_uri=input_uri,
        output_s3_uri=output_uri,
        client_request_token=uuid.uuid4().hex,
        tags={"pipeline": "calls"},
        timeout_hours=24,
        bucket_owner="123456789012",
    )
    job = bedrock_hook.get_job(job_arn)
    assert job["jobName"] == name
    assert job["timeoutDurationInHours"] == 24
    assert job["inputDataConfig"]["s3InputDataConfig"] == {
        "s3Uri": input_uri,
        "s3InputFormat": "JSONL",
        "s3BucketOwner": "123456789012",
    }
    assert job["outputDataConfig"]["s3OutputDataConfig"]["s3Uri"] == output_uri
    assert "ResponseMetadata" not in job


def test_same_client_request_token_returns_the_same_job(new_job, bedrock_hook, local_aws):
    token = uuid.uuid4().hex
    name = f"idem-{uuid.uuid4().hex[:10]}"
    first = new_job(name=name, token=token)
    second = new_job(name=name, token=token)
    assert first == second
    assert sum(1 for job in local_aws.admin.jobs() if job["job_name"] == name) == 1


def test_get_job_reports_progress_counts_when_completed(new_job, bedrock_hook):
    job = wait_terminal(bedrock_hook, new_job())
    assert job["status"] == "Completed"
    assert job_progress(job) == {
        "total_records": RECORDS,
        "processed_records": RECORDS,
        "success_records": RECORDS,
        "error_records": 0,
    }


def test_get_job_async_matches_get_job(new_job, bedrock_hook):
    job_arn = new_job()
    wait_terminal(bedrock_hook, job_arn)
    assert asyncio.run(bedrock_hook.get_job_async(job_arn)) == bedrock_hook.get_job(job_arn)


def test_iter_jobs_lists_matching_jobs_and_stops_at_max_items(new_job, bedrock_hook):
    marker = uuid.uuid4().hex[:8]
    arns = [new_job(name=f"page-{marker}-{i}") for i in range(3)]
    listed = list(bedrock_hook.iter_jobs(name_contains=marker, sort_order="Ascending"))
    assert [job["jobArn"] for job in listed] == arns
    assert len(list(bedrock_hook.iter_jobs(name_contains=marker, max_items=2))) == 2


def test_iter_jobs_follows_next_token_across_pages(new_job, bedrock_hook, monkeypatch):
    marker = uuid.uuid4().hex[:8]
    arns = [new_job(name=f"pg-{marker}-{i}") for i in range(3)]
    real_list = bedrock_hook.conn.list_model_invocation_jobs
    page_sizes = []

    def small_pages(**request):
        request["maxResults"] = 1
        page_sizes.append(request["maxResults"])
        return real_list(**request)

    monkeypatch.setattr(bedrock_hook.conn, "list_model_invocation_jobs", small_pages)
    listed = [job["jobArn"] for job in bedrock_hook.iter_jobs(name_contains=marker, sort_order="Ascending")]
    assert listed == arns
    assert len(page_sizes) >= 3


def test_iter_jobs_filters_by_status(new_job, bedrock_hook):
    marker = uuid.uuid4().hex[:8]
    done = new_job(name=f"st-{marker}-ok")
    failed = new_job(name=f"st-{marker}-bad", fault="fail")
    wait_terminal(bedrock_hook, done)
    wait_terminal(bedrock_hook, failed)
    listed = [job["jobArn"] for job in bedrock_hook.iter_jobs(name_contains=marker, status="Failed")]
    assert listed == [failed]


def test_find_job_matches_the_exact_name_not_a_longer_one(new_job, bedrock_hook):
    marker = uuid.uuid4().hex[:8]
    new_job(name=f"find-{marker}-longer")
    wanted = new_job(name=f"find-{marker}")
    found = bedrock_hook.find_job(job_name=f"find-{marker}")
    assert found is not None
    assert found["jobArn"] == wanted


def test_find_job_ignores_a_job_with_another_token(new_job, bedrock_hook):
    name = f"tok-{uuid.uuid4().hex[:10]}"
    new_job(name=name, token="a" * 64)
    assert bedrock_hook.find_job(job_name=name, client_request_token="b" * 64) is None
    assert bedrock_hook.find_job(job_name=name, client_request_token="a" * 64) is not None


def test_find_job_returns_none_when_nothing_matches(bedrock_hook, local_aws_clean):
    assert bedrock_hook.find_job(job_name=f"absent-{uuid.uuid4().hex}") is None


def test_stop_job_stops_a_running_job(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    assert bedrock_hook.stop_job(job_arn) in ("Stopping", "Stopped")
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


def test_stop_job_on_a_finished_job_returns_its_status(new_job, bedrock_hook):
    job_arn = new_job()
    wait_terminal(bedrock_hook, job_arn)
    assert bedrock_hook.stop_job(job_arn) == "Completed"


@pytest.mark.parametrize(
    "refusal", [None, "ConflictException"], ids=["stand-in's refusal", "ConflictException"]
)
def test_stop_job_refused_for_a_job_already_stopping_returns_its_status(new_job, bedrock_hook, refusal):
    # The stand-in keeps this job Stopping for 5 s and refuses a second stop meanwhile (with a
    # ValidationException); the service may answer ConflictException instead, which is injected.
    job_arn = new_job(fault="stick", tags={"local-aws:stopping-seconds": "5"})
    assert bedrock_hook.request_stop(job_arn).accepted
    events = bedrock_hook.conn.meta.events

    def refuse(**_):
        raise ClientError(
            {"Error": {"Code": refusal, "Message": "job is stopping"}}, "StopModelInvocationJob"
        )

    if refusal:
        events.register("before-call.bedrock.StopModelInvocationJob", refuse)
    try:
        refused = bedrock_hook.request_stop(job_arn)
        assert (refused.accepted, refused.status) == (False, "Stopping")
        assert bedrock_hook.stop_job(job_arn) == "Stopping"
    finally:
        events.unregister("before-call.bedrock.StopModelInvocationJob", refuse)


def test_stop_job_async_stops_a_running_job(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    assert asyncio.run(bedrock_hook.stop_job_async(job_arn)) is None
    assert wait_terminal(bedrock_hook, job_arn)["status"] in FAILED_STATUSES


def test_get_job_of_an_unknown_arn_is_not_transient(bedrock_hook, local_aws_clean):
    with pytest.raises(ClientError) as caught:
        bedrock_hook.get_job("arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz")
    assert not is_transient_error(caught.value)


def test_throttled_calls_are_retried_by_the_client(new_job, bedrock_hook, local_aws):
    job_arn = new_job()
    local_aws.admin.set_faults(throttle={"GetModelInvocationJob": 2})
    assert bedrock_hook.get_job(job_arn)["jobArn"] == job_arn
    assert local_aws.admin.faults()["throttle"]["GetModelInvocationJob"] == 0  # both 429s were met


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("job_name", "-starts-with-hyphen"),
        ("job_name", "x" * 64),
        ("client_request_token", "has space"),
        ("timeout_hours", 12),
    ],
)
def test_create_job_rejects_invalid_settings_naming_them(bedrock_hook, setting, value):
    request = {
        "job_name": "ok-name",
        "role_arn": ROLE_ARN,
        "model_id": MODEL_ID,
        "input_s3_uri": "s3://b/in/",
        "output_s3_uri": "s3://b/out/",
        "client_request_token": "a" * 64,
        "tags": {},
        setting: value,
    }
    with pytest.raises(ConfigError, match=setting):
        bedrock_hook.create_job(**request)


def test_job_id_from_arn():
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"
    assert BedrockBatchHook.job_id_from_arn(arn) == "abc123def456"
    with pytest.raises(ConfigError):
        BedrockBatchHook.job_id_from_arn("arn:aws:s3:::bucket")


def test_job_deadline_prefers_the_expiration_time():
    submitted = datetime(2026, 1, 1, tzinfo=UTC)
    expires = submitted + timedelta(hours=30)
    job = {"submitTime": submitted, "timeoutDurationInHours": 24, "jobExpirationTime": expires}
    assert job_deadline(job, margin=timedelta(0)) == expires
    del job["jobExpirationTime"]
    assert job_deadline(job, margin=timedelta(minutes=5)) == submitted + timedelta(hours=24, minutes=5)
