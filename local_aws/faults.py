"""Fault injection: per server (admin endpoint) and per job (tags), deterministic for a seed.

Server faults (POST /_local/faults, JSON, every key optional):
- ``throttle``: ``{"CreateModelInvocationJob": 2}`` -> the next 2 calls of that operation get 429.
- ``throttle_rate``: ``{"GetModelInvocationJob": 0.5}`` -> that share of calls get 429 (seeded).
- ``internal_error``: ``{"CreateModelInvocationJob": 1}`` -> the next call gets 500.
- ``access_denied``: ``{"GetModelInvocationJob": 1}`` -> the next call gets 403 AccessDeniedException
  (an IAM change that is later undone).
- ``record_error_rate``: share of records that fail with a per-record error (seeded).
- ``job_outcome``: ``fail`` | ``expire`` | ``stick`` | ``partial`` | ``hold`` for every job created
  afterwards. ``hold`` processes ``partial_after`` records and then stays InProgress until stopped
  (an operator's stop in the middle of a run, whatever the machine's speed).
- ``partial_after``: records processed before a ``partial`` job ends or a ``hold`` job waits
  (default: half).
- ``runtime_rps``: bedrock-runtime requests per second above which it answers ThrottlingException.

Job tags: ``local-aws:fault`` = ``fail`` | ``expire`` | ``stick`` | ``partial=N`` | ``hold=N``,
``local-aws:record-error-rate`` = ``0.2``, ``local-aws:record-error-code`` = ``429`` (the errorCode of
those records: 500 by default; 429 is a record the service throttled, which no model took up), and
``local-aws:stopping-seconds`` = ``5`` (real seconds a stopped job stays Stopping, whatever the speed).
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass, field
from typing import Any

OUTCOMES = ("fail", "expire", "stick", "partial", "hold")
FAULT_TAG = "local-aws:fault"
RECORD_ERROR_TAG = "local-aws:record-error-rate"
RECORD_ERROR_CODE_TAG = "local-aws:record-error-code"
RECORD_ERROR_CODES = (429, 500, 503)
STOPPING_TAG = "local-aws:stopping-seconds"


@dataclass
class JobFaults:
    """The faults one job was created with (frozen at creation, persisted with the job)."""

    outcome: str | None = None
    partial_after: int | None = None
    record_error_rate: float = 0.0
    stopping_seconds: float | None = None
    record_error_code: int = 500

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "partial_after": self.partial_after,
            "record_error_rate": self.record_error_rate,
            "stopping_seconds": self.stopping_seconds,
            "record_error_code": self.record_error_code,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobFaults:
        return cls(**data)


def _check_rate(name: str, value: Any) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
        raise ValueError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


@dataclass
class ServerFaults:
    """The server-wide fault settings; counters are consumed by the calls they hit."""

    seed: int = 0
    throttle: dict[str, int] = field(default_factory=dict)
    throttle_rate: dict[str, float] = field(default_factory=dict)
    internal_error: dict[str, int] = field(default_factory=dict)
    access_denied: dict[str, int] = field(default_factory=dict)
    record_error_rate: float = 0.0
    job_outcome: str | None = None
    partial_after: int | None = None
    runtime_rps: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        self._rng.seed(f"faults:{self.seed}")

    def reset(self, runtime_rps: float | None = None) -> None:
        with self._lock:
            self.throttle, self.throttle_rate, self.internal_error = {}, {}, {}
            self.access_denied = {}
            self.record_error_rate, self.job_outcome, self.partial_after = 0.0, None, None
            self.runtime_rps = runtime_rps
            self._rng.seed(f"faults:{self.seed}")

    def update(self, data: dict[str, Any]) -> None:
        """Merge settings from the admin endpoint; invalid input is a ValueError naming the key."""
        known = {
            "throttle",
            "throttle_rate",
            "internal_error",
            "access_denied",
            "record_error_rate",
            "job_outcome",
            "partial_after",
            "runtime_rps",
        }
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault keys {sorted(unknown)}; known: {sorted(known)}")
        with self._lock:
            for key in ("throttle", "internal_error", "access_denied"):
                for op, count in (data.get(key) or {}).items():
                    if not isinstance(count, int) or count < 0:
                        raise ValueError(f"{key}.{op} must be a non-negative integer, got {count!r}")
                    getattr(self, key)[op] = count
            for op, rate in (data.get("throttle_rate") or {}).items():
                self.throttle_rate[op] = _check_rate(f"throttle_rate.{op}", rate)
            if "record_error_rate" in data:
                self.record_error_rate = _check_rate("record_error_rate", data["record_error_rate"])
            if "job_outcome" in data:
                if data["job_outcome"] not in (*OUTCOMES, None):
                    raise ValueError(f"job_outcome must be one of {OUTCOMES} or null")
                self.job_outcome = data["job_outcome"]
            if "partial_after" in data:
                self.partial_after = data["partial_after"]
            if "runtime_rps" in data:
                self.runtime_rps = data["runtime_rps"]

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "throttle": dict(self.throttle),
                "throttle_rate": dict(self.throttle_rate),
                "internal_error": dict(self.internal_error),
                "access_denied": dict(self.access_denied),
                "record_error_rate": self.record_error_rate,
                "job_outcome": self.job_outcome,
                "partial_after": self.partial_after,
                "runtime_rps": self.runtime_rps,
            }

    def api_fault(self, operation: str) -> str | None:
        """``"throttle"``, ``"internal"``, ``"access_denied"`` or None for this call of ``operation``
        (consumes counters)."""
        with self._lock:
            if self.access_denied.get(operation, 0) > 0:
                self.access_denied[operation] -= 1
                return "access_denied"
            if self.internal_error.get(operation, 0) > 0:
                self.internal_error[operation] -= 1
                return "internal"
            if self.throttle.get(operation, 0) > 0:
                self.throttle[operation] -= 1
                return "throttle"
            rate = self.throttle_rate.get(operation, 0.0)
            if rate and self._rng.random() < rate:
                return "throttle"
        return None

    def for_new_job(self, tags: dict[str, str]) -> JobFaults:
        """The faults of a job being created: its tags win over the server settings."""
        with self._lock:
            faults = JobFaults(self.job_outcome, self.partial_after, self.record_error_rate)
        tag = tags.get(FAULT_TAG)
        if tag:
            name, _, arg = tag.partition("=")
            if name not in OUTCOMES:
                raise ValueError(f"tag {FAULT_TAG}={tag!r}: expected one of {OUTCOMES}")
            faults.outcome = name
            if arg:
                faults.partial_after = int(arg)
        if RECORD_ERROR_TAG in tags:
            faults.record_error_rate = _check_rate(RECORD_ERROR_TAG, float(tags[RECORD_ERROR_TAG]))
        if RECORD_ERROR_CODE_TAG in tags:
            code = tags[RECORD_ERROR_CODE_TAG]
            if code not in {str(c) for c in RECORD_ERROR_CODES}:
                raise ValueError(
                    f"tag {RECORD_ERROR_CODE_TAG}={code!r}: expected one of {RECORD_ERROR_CODES}"
                )
            faults.record_error_code = int(code)
        if STOPPING_TAG in tags:
            seconds = float(tags[STOPPING_TAG])
            if not 0 <= seconds <= 3600:
                raise ValueError(f"tag {STOPPING_TAG}={tags[STOPPING_TAG]!r}: expected 0..3600 seconds")
            faults.stopping_seconds = seconds
        return faults
