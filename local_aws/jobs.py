"""Batch jobs: their persisted state, and the worker thread that moves them through the life cycle.

Submitted -> Validating -> Scheduled -> InProgress -> Completed | PartiallyCompleted | Failed |
Stopped | Expired. Durations are divided by ``--speed``; at speed 1 a 200-record job completes
in about two seconds.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local_aws.faults import JobFaults
from local_aws.input_reader import InputError, JobInput, RecordLine, read_input
from local_aws.models import ModelInputError, invoke, usage_of
from local_aws.quotas import Quotas
from local_aws.s3io import S3Missing, split_uri, write
from local_aws.settings import Settings

log = logging.getLogger(__name__)

_INJECTED_RECORD_ERRORS = {
    429: "Too many requests, please wait before trying again (injected fault).",
    503: "The service is unavailable for this record (injected fault).",
}
"""The message of an injected record error by code; any other code reads as an internal error."""

ACTIVE = ("Submitted", "Validating", "Scheduled", "InProgress", "Stopping")
STOPPABLE = ("Submitted", "Validating", "Scheduled", "InProgress")

SUBMITTED_S = 0.2
VALIDATING_S = 0.3
SCHEDULED_S = 0.3
PER_RECORD_S = 0.005
STOPPING_S = 0.2
STOPPING_MIN_REAL_S = 0.25
"""Stopping lasts at least this long whatever the speed, so a client can see it."""
EXPIRE_AFTER_S = 1.0
TICK_S = 0.02


@dataclass
class Job:
    """One model invocation job as the control plane reports it (times are epoch seconds)."""

    job_id: str
    job_arn: str
    job_name: str
    model_id: str
    role_arn: str
    input_data_config: dict[str, Any]
    output_data_config: dict[str, Any]
    submit_time: float
    client_request_token: str | None = None
    status: str = "Submitted"
    message: str | None = None
    last_modified_time: float = 0.0
    end_time: float | None = None
    job_expiration_time: float | None = None
    timeout_hours: int | None = None
    vpc_config: dict[str, Any] | None = None
    invocation_type: str | None = None
    tags: list[dict[str, str]] = field(default_factory=list)
    faults: dict[str, Any] = field(default_factory=dict)
    total_records: int | None = None
    processed: int = 0
    succeeded: int = 0
    errored: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    status_since: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**data)

    def set_status(self, status: str, now: float, message: str | None = None) -> None:
        self.status = status
        self.status_since = now
        self.last_modified_time = now
        if message is not None:
            self.message = message
        if status not in ACTIVE:
            self.end_time = now


class JobStore:
    """Every job, in memory and (with a state dir) in ``jobs.json``, rewritten on each change."""

    def __init__(self, state_dir: Path | None) -> None:
        self.lock = threading.RLock()
        self._jobs: dict[str, Job] = {}
        self._path = state_dir / "jobs.json" if state_dir else None
        if self._path and self._path.exists():
            for data in json.loads(self._path.read_text()):
                job = Job.from_dict(data)
                self._jobs[job.job_id] = job

    def add(self, job: Job) -> None:
        with self.lock:
            self._jobs[job.job_id] = job
            self.save()

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self.lock:
            return list(self._jobs.values())

    def save(self) -> None:
        if self._path is None:
            return
        with self.lock:
            data = json.dumps([job.to_dict() for job in self._jobs.values()])
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_suffix(".tmp")
            tmp.write_text(data)
            os.replace(tmp, self._path)


@dataclass
class _Run:
    """What the worker holds in memory for a job being processed (rebuilt after a restart)."""

    job_input: JobInput
    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class JobWorker:
    """One background thread advancing every active job on a short tick."""

    def __init__(self, store: JobStore, settings: Settings, quotas: Quotas) -> None:
        self.store = store
        self.settings = settings
        self.quotas = quotas
        self._runs: dict[str, _Run] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="local-aws-jobs", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(TICK_S):
            for job in self.store.all():
                if job.status in ACTIVE:
                    try:
                        self.advance(job, time.time())
                    except Exception:
                        log.exception("local_aws: job %s failed in the worker", job.job_id)
                        with self.store.lock:
                            job.set_status("Failed", time.time(), "An internal error occurred in local_aws.")
                            self.store.save()

    def _due(self, job: Job, now: float, seconds: float) -> bool:
        return now - job.status_since >= seconds / self.settings.speed

    def advance(self, job: Job, now: float) -> None:
        """Move ``job`` on by what the time since its last status change allows."""
        faults = JobFaults.from_dict(job.faults)
        with self.store.lock:
            status = job.status
            if status == "Submitted" and self._due(job, now, SUBMITTED_S):
                job.set_status("Validating", now)
            elif status == "Validating" and self._due(job, now, VALIDATING_S):
                self._validate(job, now, faults)
            elif status == "Scheduled":
                if faults.outcome == "expire" and self._due(job, now, EXPIRE_AFTER_S):
                    job.set_status(
                        "Expired", now, "The job expired before it could start (local-aws:fault=expire)."
                    )
                elif faults.outcome not in ("stick", "expire") and self._due(job, now, SCHEDULED_S):
                    job.set_status("InProgress", now)
            elif status == "InProgress":
                self._process(job, now, faults)
            elif status == "Stopping" and self._due(job, now, self._stopping_s(faults)):
                self._finish(job, now, "Stopped", None)
            else:
                return
            self.store.save()

    def _stopping_s(self, faults: JobFaults) -> float:
        """How long (simulated) a stopped job stays Stopping: at least STOPPING_MIN_REAL_S real seconds,
        or the job's ``local-aws:stopping-seconds``."""
        real = STOPPING_MIN_REAL_S if faults.stopping_seconds is None else faults.stopping_seconds
        return max(STOPPING_S if faults.stopping_seconds is None else 0.0, real * self.settings.speed)

    def _validate(self, job: Job, now: float, faults: JobFaults) -> None:
        if faults.outcome == "fail":
            job.set_status(
                "Failed", now, "The job failed because of an internal error (local-aws:fault=fail)."
            )
            return
        try:
            job_input = read_input(job.input_data_config["s3InputDataConfig"]["s3Uri"], self.quotas)
        except InputError as err:
            job.set_status("Failed", now, str(err))
            return
        self._runs[job.job_id] = _Run(job_input)
        job.total_records = job_input.total
        job.set_status("Scheduled", now)

    def _run_for(self, job: Job) -> _Run:
        run = self._runs.get(job.job_id)
        if run is None:  # restarted stand-in: read the input again and redo what was done
            run = self._runs[job.job_id] = _Run(
                read_input(job.input_data_config["s3InputDataConfig"]["s3Uri"], Quotas(min_records_per_job=0))
            )
            done, job.processed, job.succeeded, job.errored = job.processed, 0, 0, 0
            job.input_tokens = job.output_tokens = 0
            for line in run.job_input.records[:done]:
                self._process_one(job, run, line, JobFaults.from_dict(job.faults))
        return run

    def _process(self, job: Job, now: float, faults: JobFaults) -> None:
        try:
            run = self._run_for(job)
        except InputError as err:
            job.set_status("Failed", now, f"The input could not be read again: {err}")
            return
        total = len(run.job_input.records)
        limit = total
        if faults.outcome in ("partial", "hold"):
            limit = min(total, faults.partial_after if faults.partial_after is not None else total // 2)
        target = min(limit, int((now - job.status_since) * self.settings.speed / PER_RECORD_S))
        for line in run.job_input.records[job.processed : target]:
            self._process_one(job, run, line, faults)
        job.last_modified_time = now
        if job.processed >= limit and faults.outcome != "hold":  # a held job runs on until it is stopped
            if limit < total:
                msg = f"The job processed {job.processed} of {total} records before it ran out of time."
                self._finish(job, now, "PartiallyCompleted", msg)
            else:
                self._finish(job, now, "Completed", None)

    def _process_one(self, job: Job, run: _Run, line: RecordLine, faults: JobFaults) -> None:
        rng = random.Random(f"{self.settings.seed}:{line.file_name}:{line.record_id}")
        out: dict[str, Any] = {"recordId": line.record_id, "modelInput": line.model_input}
        if faults.record_error_rate and rng.random() < faults.record_error_rate:
            out["error"] = {
                "errorCode": faults.record_error_code,
                "errorMessage": _INJECTED_RECORD_ERRORS.get(
                    faults.record_error_code,
                    "The model encountered an internal error processing this record (injected fault).",
                ),
            }
        else:
            try:
                output = invoke(job.model_id, job.invocation_type or "InvokeModel", line.model_input)
            except ModelInputError as err:
                out["error"] = {"errorCode": 400, "errorMessage": str(err)}
            else:
                out["modelOutput"] = output
                tokens_in, tokens_out = usage_of(output, line.model_input)
                job.input_tokens += tokens_in
                job.output_tokens += tokens_out
        job.processed += 1
        if "error" in out:
            job.errored += 1
        else:
            job.succeeded += 1
        run.results.setdefault(line.file_name, []).append(out)

    def _finish(self, job: Job, now: float, status: str, message: str | None) -> None:
        run = self._runs.pop(job.job_id, None)
        if run is not None:
            try:
                self._write_output(job, run)
            except S3Missing as err:
                job.set_status("Failed", now, f"Unable to write the output data: {err}")
                return
        job.set_status(status, now, message)

    def _write_output(self, job: Job, run: _Run) -> None:
        bucket, prefix = split_uri(job.output_data_config["s3OutputDataConfig"]["s3Uri"])
        prefix = f"{prefix.rstrip('/')}/{job.job_id}/" if prefix.strip("/") else f"{job.job_id}/"
        for file_name in run.job_input.file_names:
            lines = list(run.results.get(file_name, []))
            random.Random(f"{self.settings.seed}:{file_name}").shuffle(lines)
            body = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
            write(bucket, f"{prefix}{file_name}.out", body.encode())
        manifest = {
            "totalRecordCount": job.total_records or 0,
            "processedRecordCount": job.processed,
            "successRecordCount": job.succeeded,
            "errorRecordCount": job.errored,
            "inputTokenCount": job.input_tokens,
            "outputTokenCount": job.output_tokens,
        }
        write(bucket, f"{prefix}manifest.json.out", json.dumps(manifest).encode())

    def stop_job(self, job: Job) -> None:
        """StopModelInvocationJob: Stopping now, Stopped shortly after (output so far is kept)."""
        with self.store.lock:
            job.set_status("Stopping", time.time())
            self.store.save()
