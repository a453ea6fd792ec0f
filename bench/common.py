"""What every benchmark shares: a stopwatch, the summarize_calls pipeline objects, S3 clients."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
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


@dataclass
class NullS3:
    """An S3 client that discards every body; answers what JsonlStager asks, with made-up ETags.

    The stager checks each object's size and that its ETag did not change, so an ETag that names
    the write (no hashing here) keeps its checks running unchanged while this sink costs next to nothing.
    """

    objects: dict[str, tuple[int, str]] = field(default_factory=dict)
    uploads: dict[str, list[int]] = field(default_factory=dict)
    received_bytes: int = 0
    writes: int = 0

    def _etag(self) -> str:
        self.writes += 1
        return f"null{self.writes:08d}"

    def put_object(self, *, Key: str, Body: bytes, **_: Any) -> dict[str, str]:
        etag = self._etag()
        self.objects[Key] = (len(Body), etag)
        self.received_bytes += len(Body)
        return {"ETag": f'"{etag}"'}

    def create_multipart_upload(self, *, Key: str, **_: Any) -> dict[str, str]:
        upload_id = f"u{len(self.uploads) + 1}"
        self.uploads[upload_id] = []
        return {"UploadId": upload_id}

    def upload_part(self, *, UploadId: str, Body: bytes, **_: Any) -> dict[str, str]:
        self.uploads[UploadId].append(len(Body))
        self.received_bytes += len(Body)
        return {"ETag": f'"{self._etag()}"'}

    def complete_multipart_upload(self, *, Key: str, UploadId: str, **_: Any) -> dict[str, str]:
        sizes = self.uploads.pop(UploadId)
        etag = f"{self._etag()}-{len(sizes)}"
        self.objects[Key] = (sum(sizes), etag)
        return {"ETag": f'"{etag}"'}

    def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        self.uploads.pop(UploadId, None)
        return {}

    def head_object(self, *, Key: str, **_: Any) -> dict[str, Any]:
        size, etag = self.objects[Key]
        return {"ContentLength": size, "ETag": f'"{etag}"'}

    def list_objects_v2(self, *, Prefix: str, **_: Any) -> dict[str, Any]:
        return {"Contents": [{"Key": k} for k in self.objects if k.startswith(Prefix)], "IsTruncated": False}

    def delete_objects(self, **_: Any) -> dict[str, Any]:
        return {}
