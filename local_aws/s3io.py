"""In-process access to moto's S3 backend: the job worker reads input and writes output here."""

from __future__ import annotations

from typing import Any

from local_aws.settings import ACCOUNT_ID


class S3Missing(Exception):
    """A bucket or object the job needs does not exist."""


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    rest = uri.removeprefix("s3://")
    bucket, _, key = rest.partition("/")
    return bucket, key


def _backend() -> Any:
    from moto.s3.models import s3_backends

    return s3_backends[ACCOUNT_ID]["aws"]


def _bucket(name: str) -> Any:
    from moto.s3.exceptions import MissingBucket

    try:
        return _backend().get_bucket(name)
    except MissingBucket as err:
        raise S3Missing(f"The bucket {name} does not exist.") from err


def list_objects(bucket: str, prefix: str) -> list[tuple[str, int]]:
    """(key, size) of every object under ``prefix``, sorted by key."""
    keys, _, _, _ = _backend().list_objects(_bucket(bucket), prefix or None, None, None, None)
    return sorted((key.name, key.size) for key in keys)


def object_size(bucket: str, key: str) -> int | None:
    _bucket(bucket)
    obj = _backend().get_object(bucket, key)
    return None if obj is None else obj.size


def read(bucket: str, key: str) -> bytes:
    _bucket(bucket)
    obj = _backend().get_object(bucket, key)
    if obj is None:
        raise S3Missing(f"The object s3://{bucket}/{key} does not exist.")
    return bytes(obj.value)


def write(bucket: str, key: str, data: bytes) -> None:
    _bucket(bucket)
    _backend().put_object(bucket, key, data)
