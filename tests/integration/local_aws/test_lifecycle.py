"""The job life cycle and the Validating step's checks of the input."""

from __future__ import annotations

import json
import time

import pytest

from tests.fixtures.local_aws import LocalAwsServer
from tests.integration.local_aws.helpers import (
    call_text,
    create_job,
    jsonl,
    records,
    run_job,
    stage,
    unique,
    wait_for,
)


def test_a_job_moves_forward_through_the_statuses_to_completed_with_growing_counts(slow_local_aws):
    s3, bedrock = slow_local_aws.client("s3"), slow_local_aws.client("bedrock")
    uri = stage(s3, "life-bucket", unique("in"), {"a.jsonl": jsonl(records(2000))})
    arn = create_job(bedrock, uri, "s3://life-bucket/out/")  # InProgress for about 5 s
    seen, counts = [], []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
        job = bedrock.get_model_invocation_job(jobIdentifier=arn)
        if not seen or seen[-1] != job["status"]:
            seen.append(job["status"])
        counts.append(job.get("processedRecordCount", 0))
        if job["status"] == "Completed":
            break
    order = ["Submitted", "Validating", "Scheduled", "InProgress", "Completed"]
    assert seen == sorted(seen, key=order.index), "statuses went backwards"
    assert seen[-2:] == ["InProgress", "Completed"]
    assert any(0 < count < 2000 for count in counts), "the record counts never moved while in progress"
    assert counts == sorted(counts)


@pytest.mark.parametrize(
    ("quotas", "n_records", "message"),
    [
        ({}, 99, "fewer than the minimum of 100 records"),
        (
            {"min_records_per_job": 1, "max_records_per_file": 5},
            6,
            "more than the quota of 5 records per file",
        ),
        ({"min_records_per_job": 1, "max_records_per_job": 5}, 6, "more than the quota of 5 records per job"),
        (
            {"min_records_per_job": 1, "max_file_bytes": 1000},
            6,
            "more than the file size quota of 1000 bytes",
        ),
        ({"min_records_per_job": 1, "max_job_bytes": 1000}, 6, "more than the job size quota of 1000 bytes"),
    ],
)
def test_input_breaking_a_quota_fails_the_job(local_aws_clean, quotas, n_records, message):
    local_aws_clean.admin.set_quotas(**quotas)
    job, _ = run_job(local_aws_clean, n_records)
    assert job["status"] == "Failed"
    assert message in job["message"]


def test_a_line_that_is_not_json_fails_the_job(local_aws_clean):
    body = jsonl(records(120)) + b"{not json\n"
    job, _ = run_job(local_aws_clean, files={"part-00001.jsonl": body})
    assert job["status"] == "Failed"
    assert job["message"] == "The input file part-00001.jsonl has invalid JSON at line 121."


def test_a_line_without_model_input_fails_the_job(local_aws_clean):
    body = jsonl([*records(120), {"recordId": "X1"}])
    job, _ = run_job(local_aws_clean, files={"part-00001.jsonl": body})
    assert job["status"] == "Failed"
    assert "line 121 of input file part-00001.jsonl has no modelInput" in job["message"]


def _video_record(uri: str) -> dict:
    return {
        "recordId": "V1",
        "modelInput": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"video": {"format": "mp4", "source": {"s3Location": {"uri": uri}}}},
                        {"text": call_text(1)},
                    ],
                }
            ]
        },
    }


def test_an_s3_reference_outside_the_input_folder_fails_the_job(local_aws_clean):
    body = jsonl([*records(120), _video_record("s3://elsewhere-bucket/clip.mp4")])
    job, _ = run_job(local_aws_clean, files={"part-00001.jsonl": body}, model_id="amazon.nova-lite-v1:0")
    assert job["status"] == "Failed"
    assert "references s3://elsewhere-bucket/clip.mp4, which is not in the input folder" in job["message"]


def test_an_s3_reference_inside_the_input_folder_is_accepted(local_aws_clean):
    s3 = local_aws_clean.client("s3")
    prefix = unique("vid")
    lines = [*records(120, make_input=lambda t: {"messages": [{"role": "user", "content": [{"text": t}]}]})]
    lines.append(_video_record(f"s3://media-bucket/{prefix}/clip.mp4"))
    uri = stage(s3, "media-bucket", prefix, {"a.jsonl": jsonl(lines), "clip.mp4": b"\0"})
    bedrock = local_aws_clean.client("bedrock")
    job = wait_for(
        bedrock, create_job(bedrock, uri, "s3://media-bucket/out/", model_id="amazon.nova-lite-v1:0")
    )
    assert job["status"] == "Completed"


def test_an_empty_input_location_fails_the_job(local_aws_clean):
    s3, bedrock = local_aws_clean.client("s3"), local_aws_clean.client("bedrock")
    stage(s3, "empty-bucket", "x", {})
    job = wait_for(bedrock, create_job(bedrock, "s3://empty-bucket/nothing/", "s3://empty-bucket/out/"))
    assert job["status"] == "Failed"
    assert "No .jsonl input files were found" in job["message"]


def test_a_restarted_stand_in_still_knows_its_jobs(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    server = LocalAwsServer(state, speed=50)
    try:
        s3, bedrock = server.client("s3"), server.client("bedrock")
        uri = stage(s3, "persist-bucket", "in", {"a.jsonl": jsonl(records(100))})
        done = create_job(bedrock, uri, "s3://persist-bucket/out/")
        wait_for(bedrock, done)
        stuck = create_job(
            bedrock, uri, "s3://persist-bucket/out/", tags=[{"key": "local-aws:fault", "value": "stick"}]
        )
        wait_for(bedrock, stuck, until={"Scheduled"})
    finally:
        server.stop()
    again = LocalAwsServer(state, speed=50)
    try:
        bedrock = again.client("bedrock")
        assert bedrock.get_model_invocation_job(jobIdentifier=done)["status"] == "Completed"
        assert bedrock.get_model_invocation_job(jobIdentifier=stuck)["status"] == "Scheduled"
        assert json.loads((state / "jobs.json").read_text())
    finally:
        again.stop()


def test_a_single_file_uri_reads_only_that_file(local_aws_clean):
    s3, bedrock = local_aws_clean.client("s3"), local_aws_clean.client("bedrock")
    prefix = unique("one")
    stage(
        s3,
        "single-bucket",
        prefix,
        {"a.jsonl": jsonl(records(100)), "b.jsonl": jsonl(records(100, start=100))},
    )
    arn = create_job(bedrock, f"s3://single-bucket/{prefix}/a.jsonl", "s3://single-bucket/out/")
    job = wait_for(bedrock, arn)
    assert job["status"] == "Completed"
    assert job["totalRecordCount"] == 100


def test_a_missing_output_bucket_fails_the_job(local_aws_clean):
    s3, bedrock = local_aws_clean.client("s3"), local_aws_clean.client("bedrock")
    uri = stage(s3, "life-bucket", unique("nob"), {"a.jsonl": jsonl(records(100))})
    job = wait_for(bedrock, create_job(bedrock, uri, "s3://no-such-output-bucket/out/"))
    assert job["status"] == "Failed"
    assert "no-such-output-bucket" in job["message"]
