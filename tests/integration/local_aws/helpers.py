"""Shared helpers of the stand-in's tests: staging input, creating jobs, waiting for them."""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from typing import Any

ROLE = "arn:aws:iam::123456789012:role/BedrockBatch"
CLAUDE = "anthropic.claude-3-haiku-20240307-v1:0"
ACTIVE = {"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"}
_names = itertools.count(1)


def unique(prefix: str) -> str:
    return f"{prefix}{int(time.time() * 1000) % 10**8}n{next(_names)}"


def call_text(i: int) -> str:
    return (
        f"Customer {i} called about invoice number {1000 + i}. "
        f"The invoice for account {i} was charged twice this month. "
        "The agent apologised. "
        f"A refund for invoice {1000 + i} was issued to account {i}."
    )


def claude_input(text: str, max_tokens: int = 200) -> dict[str, Any]:
    return {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }


def records(n: int, make_input=claude_input, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"recordId": f"CALL{i:07d}", "modelInput": make_input(call_text(i))} for i in range(start, start + n)
    ]


def jsonl(lines: list[Any]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def stage(s3, bucket: str, prefix: str, files: dict[str, bytes]) -> str:
    """Put each file under ``prefix`` (creating the bucket); returns the folder's s3 URI."""
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=bucket)
    for name, body in files.items():
        s3.put_object(Bucket=bucket, Key=f"{prefix}/{name}", Body=body)
    return f"s3://{bucket}/{prefix}/"


def create_job(bedrock, input_uri: str, output_uri: str, model_id: str = CLAUDE, **kwargs: Any) -> str:
    kwargs.setdefault("jobName", unique("job"))
    return bedrock.create_model_invocation_job(
        roleArn=ROLE,
        modelId=model_id,
        inputDataConfig={"s3InputDataConfig": {"s3Uri": input_uri, "s3InputFormat": "JSONL"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": output_uri}},
        **kwargs,
    )["jobArn"]


def wait_for(bedrock, job_arn: str, until: set[str] | None = None, timeout: float = 20.0) -> dict[str, Any]:
    """Poll until the job leaves the active states (or reaches one of ``until``); bounded."""
    deadline = time.monotonic() + timeout
    while True:
        job = bedrock.get_model_invocation_job(jobIdentifier=job_arn)
        done = job["status"] in until if until else job["status"] not in ACTIVE
        if done:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_arn} still {job['status']} after {timeout}s")
        time.sleep(0.02)


def read_lines(s3, uri_prefix: str, name: str) -> list[dict[str, Any]]:
    bucket, _, key = uri_prefix.removeprefix("s3://").partition("/")
    body = s3.get_object(Bucket=bucket, Key=f"{key.rstrip('/')}/{name}")["Body"].read()
    return [json.loads(line) for line in body.splitlines()]


def output_folder(output_uri: str, job_arn: str) -> str:
    return f"{output_uri.rstrip('/')}/{job_arn.rsplit('/', 1)[1]}"


def run_job(
    local_aws, n: int = 120, *, files: dict[str, bytes] | None = None, **kwargs: Any
) -> tuple[dict, str]:
    """Stage ``n`` Claude records (or ``files``), run a job to its end; returns (job, output folder)."""
    s3, bedrock = local_aws.client("s3"), local_aws.client("bedrock")
    prefix = unique("run")
    input_uri = stage(s3, "batch-input", prefix, files or {"part-00001.jsonl": jsonl(records(n))})
    output_uri = f"s3://batch-input/out/{prefix}/"
    arn = create_job(bedrock, input_uri, output_uri, **kwargs)
    return wait_for(bedrock, arn), output_folder(output_uri, arn)
