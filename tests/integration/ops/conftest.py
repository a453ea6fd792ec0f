"""Fixtures of the ops tests: jobs on the stand-in, some tagged as a pipeline's DAG run would tag them."""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from bedrock_batch.hooks import ACTIVE_STATUSES, BedrockBatchHook
from bedrock_batch.job_tags import run_tags
from tests.fixtures.pipeline_configs import OWN_CONNECTION_ID
from tests.integration.bedrock.support import BUCKET, MODEL_ID, RECORDS, ROLE_ARN, claude_line

JobMaker = Callable[..., str]


@pytest.fixture
def hook(aws_env) -> BedrockBatchHook:
    return BedrockBatchHook(aws_conn_id="aws_default")


@pytest.fixture
def marker() -> str:
    """A unique piece of job name, so that a test lists only its own jobs on the shared stand-in."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def make_job(hook, local_aws_clean) -> Iterator[JobMaker]:
    """
    Create a job over a fresh folder of RECORDS records.

    ``run=(dag_id, run_id)`` tags it as that DAG run's submit task would; ``fault`` becomes its
    ``local-aws:fault`` tag (``stick`` keeps it Scheduled); ``under`` is the S3 folder its input folder
    goes in; ``region`` the region it is created in (jobs are regional; default the hook's). Jobs still
    active at the end are stopped.
    """
    s3 = local_aws_clean.client("s3")
    with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
        s3.create_bucket(Bucket=BUCKET)
    created: list[tuple[BedrockBatchHook, str]] = []

    def _make(
        name: str,
        *,
        run: tuple[str, str] | None = None,
        fault: str | None = None,
        tags: dict[str, str] | None = None,
        under: str = f"s3://{BUCKET}/ops",
        region: str | None = None,
    ) -> str:
        bucket, _, base = under.removeprefix("s3://").partition("/")
        prefix = f"{base.rstrip('/')}/{uuid.uuid4().hex}"
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=bucket)
        s3.put_object(
            Bucket=bucket,
            Key=f"{prefix}/part-00001.jsonl",
            Body=b"\n".join(claude_line(i) for i in range(RECORDS)) + b"\n",
        )
        tags = {"team": "ops-it", **(tags or {})}
        if run:
            tags.update(run_tags(dag_id=run[0], run_id=run[1]))
        if fault:
            tags["local-aws:fault"] = fault
        creator = hook if region is None else BedrockBatchHook(aws_conn_id="aws_default", region_name=region)
        job_arn = creator.create_job(
            job_name=name,
            role_arn=ROLE_ARN,
            model_id=MODEL_ID,
            input_s3_uri=f"s3://{bucket}/{prefix}/",
            output_s3_uri=f"s3://{bucket}/{prefix}-out/",
            client_request_token=uuid.uuid4().hex,
            tags=tags,
        )
        created.append((creator, job_arn))
        return job_arn

    yield _make
    for creator, job_arn in created:
        if creator.get_job(job_arn)["status"] in ACTIVE_STATUSES - {"Stopping"}:
            creator.stop_job(job_arn)


@dataclass(frozen=True)
class SigningAccount:
    """An AWS connection's access key on the stand-in, whose call log tells who signed each request."""

    key: str
    local_aws: Any

    def signed(self) -> list[tuple[str, str]]:
        """(action, region) of every request the stand-in served signed with this key."""
        calls = self.local_aws.admin.calls()
        return [(call["action"], call["region"]) for call in calls if call["access_key"] == self.key]


@pytest.fixture
def eu_account(aws_env, local_aws, monkeypatch, own_connection_pipeline) -> SigningAccount:
    """``aws_eu_account``, the connection of pipeline ``calls_eu``: on the stand-in with a key of its
    own and us-east-1 as its region (the pipeline's eu-central-1 must win)."""
    key = f"EU{uuid.uuid4().hex[:12].upper()}"
    extra = {"endpoint_url": local_aws.endpoint_url, "region_name": "us-east-1"}
    conn = {"conn_type": "aws", "login": key, "password": "testing", "extra": extra}
    monkeypatch.setenv(f"AIRFLOW_CONN_{OWN_CONNECTION_ID.upper()}", json.dumps(conn))
    return SigningAccount(key, local_aws)
