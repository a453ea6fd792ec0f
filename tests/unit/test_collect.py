"""Pieces of collect that need no S3 or warehouse: which record errors are retried, where output lives."""

from __future__ import annotations

import pytest

from bedrock_batch.collect import JobOutcome, is_retryable, output_prefix
from bedrock_batch.staging import StagedJob

JOB_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


@pytest.mark.parametrize("code", ["429", "500", "502", "503", "504", "408", "424"])
def test_throttling_timeouts_and_server_errors_are_retried(code):
    assert is_retryable(code, "anything")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("ThrottlingException", None),
        ("unknown", "Model timed out"),
        ("ServiceUnavailable", "try later"),
        ("ModelNotReadyException", "the model is not ready"),
        ("ServiceQuotaExceededException", None),
        ("400", "ServiceQuotaExceededException: too many jobs in flight"),
        ("400", "ThrottlingException: Too many requests, please wait"),
        ("400", "Too many requests"),
        (None, "Too Many Requests"),
    ],
)
def test_a_retryable_error_is_recognised_by_its_name_or_message(code, message):
    assert is_retryable(code, message)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("400", "Malformed input request"),
        ("ValidationException", "bad"),
        ("403", "Access denied"),
        ("400", "Malformed input request: internal field max_tokens is out of range"),
        ("400", "ValidationException: Too many input tokens. Max input tokens: 200000"),
        ("400", "Too many images in the request"),
        (None, None),
    ],
)
def test_input_and_permission_errors_are_final(code, message):
    assert not is_retryable(code, message)


def test_output_lives_under_the_job_id_below_the_output_uri():
    job = StagedJob(
        index=1,
        job_name="p-20261110-abc-j001",
        input_s3_uri="s3://in/input/p/run/jobs/p-20261110-abc-j001/",
        output_s3_uri="s3://out/output/p/run/p-20261110-abc-j001/",
        map_s3_uri="s3://in/input/p/run/maps/p-20261110-abc-j001.jsonl",
        files=[],
        records=0,
        bytes=0,
        est_input_tokens=0,
    )
    assert output_prefix(job, JOB_ARN) == ("out", "output/p/run/p-20261110-abc-j001/abc123def456/")


def test_a_job_outcome_is_plain_data_for_xcom():
    outcome = JobOutcome(job_name="j", job_arn=JOB_ARN, status="Completed", records=3, summarized=3)
    data = outcome.to_dict()
    assert data["summarized"] == 3 and data["quarantine_samples"] == []
    assert JobOutcome(**data) == outcome
