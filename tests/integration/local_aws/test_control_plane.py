"""The Bedrock control plane: model invocation jobs through a real boto3 client."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.local_aws.helpers import (
    ACTIVE,
    ROLE,
    create_job,
    jsonl,
    records,
    stage,
    unique,
    wait_for,
)


@pytest.fixture
def bedrock(local_aws_clean):
    return local_aws_clean.client("bedrock")


@pytest.fixture
def input_uri(local_aws_clean):
    return stage(
        local_aws_clean.client("s3"), "control-bucket", unique("in"), {"a.jsonl": jsonl(records(100))}
    )


OUTPUT = "s3://control-bucket/out/"
STICK = [{"key": "local-aws:fault", "value": "stick"}]


def test_create_returns_an_arn_with_a_12_char_job_id(bedrock, input_uri):
    arn = create_job(bedrock, input_uri, OUTPUT)
    assert re.fullmatch(r"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/[a-z0-9]{12}", arn)


def test_the_same_client_request_token_returns_the_same_job(bedrock, input_uri, local_aws_clean):
    token = unique("tok")
    first = create_job(bedrock, input_uri, OUTPUT, clientRequestToken=token, jobName=unique("a"))
    second = create_job(bedrock, input_uri, OUTPUT, clientRequestToken=token, jobName=unique("b"))
    assert first == second
    assert sum(1 for job in local_aws_clean.admin.jobs() if job["client_request_token"] == token) == 1


def test_an_invalid_job_name_is_rejected_in_the_service_style(bedrock, input_uri):
    with pytest.raises(bedrock.exceptions.ValidationException) as info:
        create_job(bedrock, input_uri, OUTPUT, jobName="bad name!")
    message = info.value.response["Error"]["Message"]
    assert message.startswith("1 validation error detected: Value 'bad name!' at 'jobName'")
    assert "regular expression pattern" in message


def test_every_violation_is_listed(bedrock, input_uri):
    with pytest.raises(bedrock.exceptions.ValidationException) as info:
        bedrock.create_model_invocation_job(
            jobName=unique("j"),
            roleArn="not-a-role",
            modelId="anthropic.claude-3-haiku-20240307-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": "s3://UPPER/x"}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": OUTPUT}},
            timeoutDurationInHours=169,
        )
    message = info.value.response["Error"]["Message"]
    assert message.startswith("3 validation errors detected")
    assert "at 'roleArn'" in message
    assert "at 'inputDataConfig.s3InputDataConfig.s3Uri'" in message
    assert (
        "at 'timeoutDurationInHours' failed to satisfy constraint: Member must have value less than"
        in message
    )


def test_an_unsupported_model_is_rejected(bedrock, input_uri):
    with pytest.raises(bedrock.exceptions.ValidationException, match="model identifier is invalid"):
        create_job(bedrock, input_uri, OUTPUT, model_id="cohere.command-r-v1:0")


def test_get_returns_every_stored_field(bedrock, input_uri):
    tags = [{"key": "team", "value": "calls"}]
    vpc = {"subnetIds": ["subnet-1"], "securityGroupIds": ["sg-1"]}
    arn = create_job(
        bedrock,
        input_uri,
        OUTPUT,
        clientRequestToken=unique("t"),
        timeoutDurationInHours=24,
        vpcConfig=vpc,
        tags=tags,
        modelInvocationType="InvokeModel",
    )
    job = wait_for(bedrock, arn)
    assert job["status"] == "Completed"
    assert job["timeoutDurationInHours"] == 24
    assert job["vpcConfig"] == vpc
    assert job["modelInvocationType"] == "InvokeModel"
    assert job["jobExpirationTime"] - job["submitTime"] == timedelta(hours=24)
    assert job["submitTime"] <= job["lastModifiedTime"] <= job["endTime"]
    counts = [job[k] for k in ("totalRecordCount", "processedRecordCount", "successRecordCount")]
    assert counts == [100, 100, 100]
    assert job["errorRecordCount"] == 0
    assert bedrock.list_tags_for_resource(resourceARN=arn)["tags"] == tags


def test_get_accepts_the_bare_job_id(bedrock, input_uri):
    arn = create_job(bedrock, input_uri, OUTPUT)
    assert bedrock.get_model_invocation_job(jobIdentifier=arn.rsplit("/", 1)[1])["jobArn"] == arn


def test_an_unknown_job_is_not_found(bedrock):
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.get_model_invocation_job(jobIdentifier="abcdefabcdef")


def test_list_filters_by_name_status_and_time(bedrock, input_uri):
    marker = unique("flt")
    arns = [create_job(bedrock, input_uri, OUTPUT, jobName=f"{marker}x{i}") for i in range(3)]
    for arn in arns:
        wait_for(bedrock, arn)
    found = bedrock.list_model_invocation_jobs(nameContains=marker, statusEquals="Completed")
    assert sorted(j["jobArn"] for j in found["invocationJobSummaries"]) == sorted(arns)
    assert not bedrock.list_model_invocation_jobs(nameContains=marker, statusEquals="Failed")[
        "invocationJobSummaries"
    ]
    future = datetime.now(UTC) + timedelta(minutes=5)
    assert not bedrock.list_model_invocation_jobs(nameContains=marker, submitTimeAfter=future)[
        "invocationJobSummaries"
    ]
    assert (
        len(
            bedrock.list_model_invocation_jobs(nameContains=marker, submitTimeBefore=future)[
                "invocationJobSummaries"
            ]
        )
        == 3
    )


def test_list_sorts_and_paginates(bedrock, input_uri):
    marker = unique("pg")
    arns = [create_job(bedrock, input_uri, OUTPUT, jobName=f"{marker}x{i}") for i in range(5)]
    pages = bedrock.get_paginator("list_model_invocation_jobs").paginate(
        nameContains=marker, sortOrder="Descending", PaginationConfig={"PageSize": 2}
    )
    sizes, seen = [], []
    for page in pages:
        sizes.append(len(page["invocationJobSummaries"]))
        seen += [j["jobArn"] for j in page["invocationJobSummaries"]]
    assert sizes == [2, 2, 1]
    assert seen == arns[::-1]


def test_stop_moves_the_job_to_stopping_then_stopped(bedrock, input_uri):
    tags = [{"key": "local-aws:fault", "value": "stick"}, {"key": "local-aws:stopping-seconds", "value": "5"}]
    arn = create_job(bedrock, input_uri, OUTPUT, tags=tags)
    wait_for(bedrock, arn, until={"Scheduled"})
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] == "Stopping"  # for 5 s
    job = wait_for(bedrock, arn)
    assert job["status"] == "Stopped"
    assert "endTime" in job


def test_stopping_a_finished_job_is_a_validation_error(bedrock, input_uri):
    arn = create_job(bedrock, input_uri, OUTPUT)
    wait_for(bedrock, arn)
    with pytest.raises(bedrock.exceptions.ValidationException, match="cannot be stopped"):
        bedrock.stop_model_invocation_job(jobIdentifier=arn)


def test_stopping_an_unknown_job_is_not_found(bedrock):
    with pytest.raises(bedrock.exceptions.ResourceNotFoundException):
        bedrock.stop_model_invocation_job(jobIdentifier="abcdefabcdef")


def test_jobs_over_the_concurrency_quota_are_refused(bedrock, input_uri, local_aws_clean):
    for _ in range(600):  # let jobs of earlier tests end: they count against the quota too (bounded)
        if not any(job["status"] in ACTIVE for job in local_aws_clean.admin.jobs()):
            break
        time.sleep(0.1)
    assert not any(job["status"] in ACTIVE for job in local_aws_clean.admin.jobs()), "earlier jobs still run"
    local_aws_clean.admin.set_quotas(max_concurrent_jobs=1)
    stuck = create_job(bedrock, input_uri, OUTPUT, tags=[{"key": "local-aws:fault", "value": "stick"}])
    with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException):
        create_job(bedrock, input_uri, OUTPUT)
    bedrock.stop_model_invocation_job(jobIdentifier=stuck)
    wait_for(bedrock, stuck)


def _llama_input(local_aws, prefix: str) -> str:
    llama = [
        {"recordId": f"L{i:010d}", "modelInput": {"prompt": "hi", "max_gen_len": 20}} for i in range(100)
    ]
    return stage(local_aws.client("s3"), "control-bucket", unique(prefix), {"a.jsonl": jsonl(llama)})


def _stop_all(bedrock, arns: list[str]) -> None:
    for arn in arns:
        bedrock.stop_model_invocation_job(jobIdentifier=arn)
        wait_for(bedrock, arn)


def test_the_concurrency_quota_counts_each_base_model_on_its_own(bedrock, local_aws_clean):
    local_aws_clean.admin.set_quotas(max_concurrent_jobs=1)
    model = "meta.llama3-1-8b-instruct-v1:0"  # no other spec runs jobs of it
    llama_input = _llama_input(local_aws_clean, "llama")
    jobs = [create_job(bedrock, llama_input, OUTPUT, model_id=model, tags=STICK)]
    try:
        with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException, match=model):
            create_job(bedrock, llama_input, OUTPUT, model_id=f"us.{model}")
        jobs.append(
            create_job(bedrock, llama_input, OUTPUT, model_id="mistral.mistral-7b-instruct-v0:2", tags=STICK)
        )
    finally:
        _stop_all(bedrock, jobs)
    assert len(jobs) == 2


def test_a_custom_model_counts_against_its_own_smaller_limit(bedrock, local_aws_clean):
    local_aws_clean.admin.set_quotas(max_concurrent_custom_jobs=1)
    base = "meta.llama3-1-8b-instruct-v1:0"
    custom = f"arn:aws:bedrock:us-east-1:123456789012:custom-model/{base}:128k/c1c2c3c4c5c6"
    llama_input = _llama_input(local_aws_clean, "custom")
    jobs = [create_job(bedrock, llama_input, OUTPUT, model_id=custom, tags=STICK)]
    try:
        with pytest.raises(bedrock.exceptions.ServiceQuotaExceededException, match="limit of 1 "):
            create_job(bedrock, llama_input, OUTPUT, model_id=custom)
        # Neither another custom model of the same base nor the base model itself counts it.
        other_custom = custom.replace("c1c2c3c4c5c6", "d1d2d3d4d5d6")
        jobs.append(create_job(bedrock, llama_input, OUTPUT, model_id=other_custom, tags=STICK))
        jobs.append(create_job(bedrock, llama_input, OUTPUT, model_id=base, tags=STICK))
    finally:
        _stop_all(bedrock, jobs)
    assert len(jobs) == 3


def test_a_job_is_known_only_in_its_own_region(bedrock, input_uri, local_aws_clean):
    arn = create_job(bedrock, input_uri, OUTPUT, jobName=unique("regional"))
    elsewhere = local_aws_clean.client("bedrock", region_name="us-west-2")

    with pytest.raises(elsewhere.exceptions.ResourceNotFoundException):
        elsewhere.get_model_invocation_job(jobIdentifier=arn)
    with pytest.raises(elsewhere.exceptions.ResourceNotFoundException):
        elsewhere.stop_model_invocation_job(jobIdentifier=arn)
    listed = elsewhere.list_model_invocation_jobs(maxResults=1000)["invocationJobSummaries"]
    assert arn not in {job["jobArn"] for job in listed}
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["jobArn"] == arn


def test_a_reused_job_name_is_refused(bedrock, input_uri):
    name = unique("same")
    create_job(bedrock, input_uri, OUTPUT, jobName=name)
    with pytest.raises(bedrock.exceptions.ValidationException, match="already exists"):
        create_job(bedrock, input_uri, OUTPUT, jobName=name)


def test_the_role_must_be_an_iam_role_arn(bedrock, input_uri):
    with pytest.raises(bedrock.exceptions.ValidationException, match="roleArn"):
        bedrock.create_model_invocation_job(
            jobName=unique("r"),
            roleArn=ROLE.replace(":role/", ":user/"),
            modelId="amazon.nova-lite-v1:0",
            inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri}},
            outputDataConfig={"s3OutputDataConfig": {"s3Uri": OUTPUT}},
        )
