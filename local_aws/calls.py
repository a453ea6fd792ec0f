"""The log of every AWS action the stand-in served, so tests can assert what a client did."""

from __future__ import annotations

import threading
import time
from typing import Any


class CallLog:
    """Thread-safe, bounded list of served actions (``{"action": "s3:PutObject", ...}``), each with
    the region and access key id the request was signed with (None when unsigned); an S3 action also
    with its ``path`` (``/bucket/key``) and a listing's ``prefix``."""

    def __init__(self, limit: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._calls: list[dict[str, Any]] = []
        self._limit = limit

    def record(
        self,
        service: str,
        operation: str,
        status: int,
        *,
        region: str | None = None,
        access_key: str | None = None,
        path: str | None = None,
        list_prefix: str | None = None,
    ) -> None:
        prefix = {"bedrock-runtime": "bedrock", "service-quotas": "servicequotas"}.get(service, service)
        entry = {
            "action": f"{prefix}:{operation}",
            "service": service,
            "status": status,
            "time": time.time(),
            "region": region,
            "access_key": access_key,
        }
        if path is not None:  # S3: the request's /bucket/key, and a listing's prefix
            entry["path"] = path
            entry["prefix"] = list_prefix
        with self._lock:
            self._calls.append(entry)
            if len(self._calls) > self._limit:
                del self._calls[: len(self._calls) - self._limit]

    def list(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._calls)

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
