"""Fault injection: per server through /_local/faults, per job through tags; deterministic."""

from __future__ import annotations

import time

import pytest

from tests.integration.local_aws.helpers import (
    create_job,
    jsonl,
    output_folder,
    read_lines,
    records,
    run_job,
    stage,
    unique,
    wait_for,
)


def _error_ids(local_aws, out):
    lines = read_lines(local_aws.client("s3"), out, "part-00001.jsonl.out")
    return {line["recordId"] for line in lines if "error" in line}


def test_a_record_error_rate_fails_that_share_of_records_the_same_way_each_time(local_aws_clean):
    local_aws_clean.admin.set_faults(record_error_rate=0.3)
    first, out1 = run_job(local_aws_clean, 200)
    _, out2 = run_job(local_aws_clean, 200)
    assert first["status"] == "Completed"
    assert 30 < first["errorRecordCount"] < 90
    assert first["successRecordCount"] + first["errorRecordCount"] == 200
    assert _error_ids(local_aws_clean, out1) == _error_ids(local_aws_clean, out2)
    line = next(
        x for x in read_lines(local_aws_clean.client("s3"), out1, "part-00001.jsonl.out") if "error" in x
    )
    assert line["error"]["errorCode"] == 500


def test_a_job_tag_sets_the_record_error_rate(local_aws_clean):
    job, _ = run_job(local_aws_clean, 100, tags=[{"key": "local-aws:record-error-rate", "value": "1"}])
    assert job["errorRecordCount"] == 100


def test_the_next_n_creates_are_throttled(local_aws_clean):
    local_aws_clean.admin.set_faults(throttle={"CreateModelInvocationJob": 2})
    bedrock = local_aws_clean.client("bedrock")
    uri = stage(local_aws_clean.client("s3"), "fault-bucket", unique("t"), {"a.jsonl": jsonl(records(100))})
    for _ in range(2):
        with pytest.raises(bedrock.exceptions.ThrottlingException) as info:
            create_job(bedrock, uri, "s3://fault-bucket/out/")
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert create_job(bedrock, uri, "s3://fault-bucket/out/")


def test_a_throttle_rate_on_get_throttles_some_calls(local_aws_clean):
    local_aws_clean.admin.set_faults(throttle_rate={"GetModelInvocationJob": 0.5})
    bedrock = local_aws_clean.client("bedrock")
    outcomes = []
    for _ in range(40):
        try:
            bedrock.get_model_invocation_job(jobIdentifier="abcdefabcdef")
        except bedrock.exceptions.ThrottlingException:
            outcomes.append("throttled")
        except bedrock.exceptions.ResourceNotFoundException:
            outcomes.append("served")
    assert 5 < outcomes.count("throttled") < 35


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [("internal_error", "InternalServerException", 500), ("access_denied", "AccessDeniedException", 403)],
)
def test_a_counted_fault_answers_its_error_then_lets_calls_through(local_aws_clean, fault, error, status):
    local_aws_clean.admin.set_faults(**{fault: {"ListModelInvocationJobs": 1}})
    bedrock = local_aws_clean.client("bedrock")
    with pytest.raises(getattr(bedrock.exceptions, error)) as info:
        bedrock.list_model_invocation_jobs()
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert "invocationJobSummaries" in bedrock.list_model_invocation_jobs()


@pytest.mark.parametrize(("tag", "status"), [("fail", "Failed"), ("expire", "Expired")])
def test_a_job_tag_decides_a_bad_ending(local_aws_clean, tag, status):
    job, _ = run_job(local_aws_clean, 100, tags=[{"key": "local-aws:fault", "value": tag}])
    assert job["status"] == status
    assert job["message"]
    assert "endTime" in job


def test_a_partial_job_keeps_the_records_it_processed(local_aws_clean):
    job, out = run_job(local_aws_clean, 120, tags=[{"key": "local-aws:fault", "value": "partial=30"}])
    assert job["status"] == "PartiallyCompleted"
    assert (job["totalRecordCount"], job["processedRecordCount"]) == (120, 30)
    assert len(read_lines(local_aws_clean.client("s3"), out, "part-00001.jsonl.out")) == 30
    [manifest] = read_lines(local_aws_clean.client("s3"), out, "manifest.json.out")
    assert (manifest["totalRecordCount"], manifest["processedRecordCount"]) == (120, 30)


@pytest.mark.parametrize(("outcome", "status"), [("fail", "Failed"), ("partial", "PartiallyCompleted")])
def test_a_server_job_outcome_applies_to_new_jobs(local_aws_clean, outcome, status):
    local_aws_clean.admin.set_faults(job_outcome=outcome, partial_after=10)
    job, _ = run_job(local_aws_clean, 100)
    assert job["status"] == status


def test_a_stuck_job_stays_scheduled(local_aws_clean):
    local_aws_clean.admin.set_faults(job_outcome="stick")
    s3, bedrock = local_aws_clean.client("s3"), local_aws_clean.client("bedrock")
    uri = stage(s3, "fault-bucket", unique("s"), {"a.jsonl": jsonl(records(100))})
    arn = create_job(bedrock, uri, "s3://fault-bucket/out/")
    wait_for(bedrock, arn, until={"Scheduled"})
    time.sleep(0.5)  # many times the scheduled duration at the fixture's speed
    assert bedrock.get_model_invocation_job(jobIdentifier=arn)["status"] == "Scheduled"
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    assert wait_for(bedrock, arn)["status"] == "Stopped"


def test_a_held_job_processes_its_records_then_runs_on_until_stopped(local_aws_clean):
    s3, bedrock = local_aws_clean.client("s3"), local_aws_clean.client("bedrock")
    uri = stage(s3, "fault-bucket", unique("h"), {"part-00001.jsonl": jsonl(records(100))})
    arn = create_job(
        bedrock, uri, "s3://fault-bucket/out/", tags=[{"key": "local-aws:fault", "value": "hold=30"}]
    )
    job = wait_for(bedrock, arn, until={"InProgress"})
    deadline = time.monotonic() + 30
    while job.get("processedRecordCount", 0) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
    time.sleep(0.5)  # many times the rest of the job's duration at the fixture's speed
    job = bedrock.get_model_invocation_job(jobIdentifier=arn)
    assert (job["status"], job["processedRecordCount"]) == ("InProgress", 30)
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_for(bedrock, arn)
    assert (job["status"], job["processedRecordCount"]) == ("Stopped", 30)
    lines = read_lines(s3, output_folder("s3://fault-bucket/out/", arn), "part-00001.jsonl.out")
    assert len(lines) == 30


def test_a_stopped_job_keeps_the_output_written_so_far(slow_local_aws):
    s3, bedrock = slow_local_aws.client("s3"), slow_local_aws.client("bedrock")
    uri = stage(s3, "fault-bucket", unique("p"), {"part-00001.jsonl": jsonl(records(3000))})
    arn = create_job(bedrock, uri, "s3://fault-bucket/out/")  # InProgress for about 7.5 s
    job = wait_for(bedrock, arn, until={"InProgress"}, timeout=60)
    deadline = time.monotonic() + 30
    while (
        job["status"] == "InProgress" and not job.get("processedRecordCount") and time.monotonic() < deadline
    ):
        time.sleep(0.02)
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
    bedrock.stop_model_invocation_job(jobIdentifier=arn)
    job = wait_for(bedrock, arn)
    assert job["status"] == "Stopped"
    assert 0 < job["processedRecordCount"] < 3000
    lines = read_lines(s3, output_folder("s3://fault-bucket/out/", arn), "part-00001.jsonl.out")
    assert len(lines) == job["processedRecordCount"]
