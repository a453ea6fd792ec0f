"""What every benchmark shares: a stopwatch, the summarize_calls pipeline objects, S3 clients."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from functools import lru_cache
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bedrock_batch.config import PipelineConfig
    from bedrock_batch.models import ModelFamily
    from bedrock_batch.prompts import PromptTemplate
    from bedrock_batch.quotas import BatchQuotas
    from bedrock_batch.records import RecordBuilder

BUCKET = "bench"
PIPELINE = "summarize_calls"
ENDPOINT_ENV = "BENCH_AWS_ENDPOINT"


class Stopwatch:
    """Adds up the time spent inside ``with stopwatch:`` blocks (generation stays outside)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __enter__(self) -> Stopwatch:
        self._started = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.seconds += time.perf_counter() - self._started


@dataclass(frozen=True)
class Pipeline:
    """The summarize_calls pipeline as prepare.py sees it."""

    config: PipelineConfig
    family: ModelFamily
    prompt: PromptTemplate
    quotas: BatchQuotas

    def builder(self) -> RecordBuilder:
        from bedrock_batch.prepare import record_builder

        return record_builder(self.config, self.family, self.prompt)


@lru_cache(maxsize=1)
def pipeline() -> Pipeline:
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline
    from bedrock_batch.models import family_for
    from bedrock_batch.prompts import load_prompt
    from bedrock_batch.quotas import default_quotas

    config = load_pipeline(PIPELINES_DIR / f"{PIPELINE}.yaml")
    return Pipeline(
        config=config,
        family=family_for(config.model.id, config.model.invocation_type),
        prompt=load_prompt(config.prompt_path),
        quotas=default_quotas(config.model.id),
    )


def s3_client(endpoint_url: str | None = None) -> Any:
    """A boto3 S3 client on the stand-in (path-style, test credentials).

    Bodies are not SHA-256 signed: botocore signs every payload sent over plain HTTP, but not a
    checksummed upload over HTTPS, which is how the stager, the baseline and the limit reach real S3.
    """
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint_url or os.environ[ENDPOINT_ENV],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            s3={"addressing_style": "path", "payload_signing_enabled": False},
            retries={"mode": "standard", "max_attempts": 3},
        ),
    )


def delete_prefix(s3: Any, bucket: str, prefix: str) -> int:
    """Delete every object under ``prefix`` (the stand-in holds S3 in memory: free it between runs)."""
    deleted = 0
    for _ in range(10_000):
        page = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if not keys:
            break
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
        deleted += len(keys)
    return deleted


def null_s3() -> Any:
    """The library's S3 client that discards every body (``staging.DiscardingS3``): a null sink."""
    from bedrock_batch.staging import DiscardingS3

    return DiscardingS3()
