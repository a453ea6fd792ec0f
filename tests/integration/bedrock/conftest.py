"""Fixtures of the Bedrock hook, trigger, sensor and operator tests against local_aws."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import pytest

from bedrock_batch.hooks import BedrockBatchHook
from tests.integration.bedrock.support import BUCKET, MODEL_ID, RECORDS, ROLE_ARN, claude_line


@pytest.fixture
def bedrock_stage(aws_env, local_aws_clean):
    """A folder of RECORDS valid Claude records in the stand-in's S3; returns (input_uri, output_uri)."""
    s3 = local_aws_clean.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    prefix = f"in/{uuid.uuid4().hex}"
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{prefix}/part-00001.jsonl",
        Body=b"\n".join(claude_line(i) for i in range(RECORDS)) + b"\n",
    )
    return f"s3://{BUCKET}/{prefix}/", f"s3://{BUCKET}/out/{prefix.split('/')[-1]}/"


@pytest.fixture
def bedrock_hook(aws_env) -> BedrockBatchHook:
    return BedrockBatchHook(aws_conn_id="aws_default")


@pytest.fixture
def new_job(bedrock_hook, bedrock_stage) -> Iterator[Callable[..., str]]:
    """Create a job on the stand-in; ``fault`` becomes its ``local-aws:fault`` tag, ``tags`` are added."""
    input_uri, output_uri = bedrock_stage
    created: list[str] = []

    def _create(
        fault: str | None = None,
        name: str | None = None,
        token: str | None = None,
        tags: dict[str, str] | None = None,
    ) -> str:
        tags = {"project": "it", **(tags or {})}
        if fault:
            tags["local-aws:fault"] = fault
        job_arn = bedrock_hook.create_job(
            job_name=name or f"it-{uuid.uuid4().hex[:12]}",
            role_arn=ROLE_ARN,
            model_id=MODEL_ID,
            input_s3_uri=input_uri,
            output_s3_uri=output_uri,
            client_request_token=token or uuid.uuid4().hex,
            tags=tags,
        )
        created.append(job_arn)
        return job_arn

    yield _create
    # A stuck job would count against the stand-in's concurrent-job quota for the whole session.
    for job_arn in created:
        if bedrock_hook.get_job(job_arn)["status"] in ("Submitted", "Validating", "Scheduled", "InProgress"):
            bedrock_hook.stop_job(job_arn)
