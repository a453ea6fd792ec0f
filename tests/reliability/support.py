"""Helpers of the reliability suite: whole-DAG runs with their own environment, and in-process runs
of the library (prepare -> submit -> wait -> collect) against the stand-in with its fault knobs.

Both end with the same two questions: is every source row of the day accounted for exactly once
(``PipelineRun.account()``), and did each planned job become exactly one Bedrock job?
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from tests.fixtures.airflow_env import AIRFLOW_BIN
from tests.fixtures.pipeline_run import (
    BUCKET,
    DAG_ID,
    SHIPPED_CONFIG,
    PipelineRun,
    _set_path,
    seed_transcripts,
)
from tests.fixtures.postgres import WAREHOUSE_CONN_ID, WarehouseDb

ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchTests"
ACCOUNT_ID = "123456789012"
KMS_KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/0b4c6f1e-2d7a-4a8e-9c3f-5e6d7f8a9b0c"
WAIT_S = 60.0
DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "summarize_calls.py"


def sqlite_warehouse_at(path: Path) -> WarehouseDb:
    """A SQLite warehouse file, as the fixtures' WarehouseDb (usable outside a test function)."""

    def connect() -> sqlite3.Connection:
        return sqlite3.connect(path, timeout=10)

    return WarehouseDb(WAREHOUSE_CONN_ID, "sqlite", connect, path=path)


def pipeline_env(local_aws: Any, warehouse: WarehouseDb) -> dict[str, str]:
    """Everything a DAG run (or the library in-process) needs to reach the stand-in and the warehouse."""
    aws_conn = {
        "conn_type": "aws",
        "login": "testing",
        "password": "testing",
        "extra": {"endpoint_url": local_aws.endpoint_url, "region_name": "us-east-1"},
    }
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn),
        f"AIRFLOW_CONN_{WAREHOUSE_CONN_ID.upper()}": json.dumps(
            {"conn_type": "sqlite", "host": str(warehouse.path)}
        ),
        "AIRFLOW_VAR_BEDROCK_BATCH_ROLE_ARN": ROLE_ARN,
        "AIRFLOW_VAR_BEDROCK_BATCH_INPUT_BUCKET": BUCKET,
        "AIRFLOW_VAR_BEDROCK_BATCH_OUTPUT_BUCKET": BUCKET,
        "BEDROCK_BATCH_POLL_INTERVAL_SECONDS": "1",
        "BEDROCK_BATCH_RETRY_DELAY_SECONDS": "1",
    }


def ensure_bucket(local_aws: Any) -> None:
    s3 = local_aws.client("s3")
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)


def write_config(directory: Path, changes: Mapping[str, Any]) -> Path:
    """The shipped pipeline config with ``changes`` (dotted paths) applied, in ``directory``."""
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text())
    for dotted, value in changes.items():
        _set_path(raw, dotted, value)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / SHIPPED_CONFIG.name
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class DagRunner:
    """Runs `airflow dags test summarize_calls` for a day; records the jobs and calls it caused."""

    local_aws: Any
    workdir: Path

    def start(
        self,
        warehouse: WarehouseDb,
        day: dt.date,
        *,
        seed_count: int = 300,
        config_changes: Mapping[str, Any] | None = None,
        conf: Mapping[str, Any] | None = None,
        logical_date: dt.date | None = None,
        run_after: dt.datetime | None = None,
    ) -> StartedRun:
        """Start the run in its own process group (so a test can kill it); ``finish`` waits for it."""
        ensure_bucket(self.local_aws)
        seeded = seed_transcripts(warehouse, day, seed_count) if seed_count else 0
        env = pipeline_env(self.local_aws, warehouse)
        if config_changes:
            env["BEDROCK_BATCH_PIPELINES_DIR"] = str(
                write_config(self.workdir / "pipelines", config_changes).parent
            )
        before = {job["job_id"] for job in self.local_aws.admin.jobs()}
        self.local_aws.admin.clear_calls()
        logical = logical_date or day + dt.timedelta(days=1)
        if run_after is None:
            command = [str(AIRFLOW_BIN), "dags", "test", DAG_ID, logical.isoformat()]
            if conf:
                command += ["--conf", json.dumps(dict(conf))]
        else:
            logical_at = dt.datetime.combine(logical, dt.time(), dt.UTC)
            command = [
                sys.executable,
                "-c",
                _DAG_TEST_SCRIPT,
                logical_at.isoformat(),
                run_after.isoformat(),
                json.dumps(dict(conf or {})),
                str(DAG_FILE),
            ]
        process = subprocess.Popen(
            command,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return StartedRun(process, warehouse, day, seeded, before)

    def finish(self, started: StartedRun, timeout: float = 300) -> PipelineRun:
        try:
            stdout, stderr = started.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            started.kill()
            stdout, stderr = started.process.communicate(timeout=30)
        run = PipelineRun(
            started.day, started.process.returncode, stdout, stderr, started.warehouse, started.seeded
        )
        (self.workdir / f"dag-run-{started.day.isoformat()}-{time.monotonic_ns()}.log").write_text(run.output)
        run.extra["jobs"] = [
            job for job in self.local_aws.admin.jobs() if job["job_id"] not in started.jobs_before
        ]
        run.extra["calls"] = self.local_aws.admin.calls()
        return run

    def run(
        self, warehouse: WarehouseDb, day: dt.date, *, timeout: float = 300, **kwargs: Any
    ) -> PipelineRun:
        return self.finish(self.start(warehouse, day, **kwargs), timeout=timeout)


@dataclass
class StartedRun:
    process: subprocess.Popen
    warehouse: WarehouseDb
    day: dt.date
    seeded: int
    jobs_before: set[str]

    def kill(self) -> None:
        """SIGKILL the run's whole process group (the worker dies; nothing gets to clean up)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)


_DAG_TEST_SCRIPT = """
# DAG.test with a fixed run_after: the run id is manual__{run_after}. `airflow dags test` names its run
# after the current time, so two CLI runs never share a run id; DAG.test(run_after=...) with the same
# logical date replaces the existing run under the same id.
import datetime as dt, json, runpy, sys
logical, run_after, conf = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dag = runpy.run_path(sys.argv[4])["dag"]
dr = dag.test(
    run_after=dt.datetime.fromisoformat(run_after),
    logical_date=dt.datetime.fromisoformat(logical),
    run_conf=conf or None,
)
print("DAG_RUN_ID=" + dr.run_id)
print("DAG_RUN_STATE=" + str(dr.state))
sys.exit(0 if str(dr.state) == "success" else 1)
"""


def planned_jobs(run: PipelineRun) -> int:
    """How many jobs prepare planned, from its log line ("... staged in N jobs ...")."""
    import re

    found = re.findall(r"staged in (\d+) jobs", run.output)
    assert found, "prepare's plan line is missing from the run's output"
    return int(found[-1])


def assert_conserved(counts: Mapping[str, int], source_rows: int) -> None:
    """Every source row of the day ends summarized, errored or pending, and none twice."""
    assert counts["source_rows"] == source_rows, counts
    assert counts["unaccounted"] == 0, counts
    assert counts["duplicated"] == 0, counts
    assert counts["summarized"] + counts["pending"] + counts["errored"] == source_rows, counts


def records_submitted_twice(local_aws: Any, jobs: Iterable[Mapping[str, Any]]) -> int:
    """Record ids in the input of more than one of ``jobs`` (stand-in jobs), or twice in one: each
    such record is billed twice. (The warehouse's primary keys hide a second load of the same key, so
    double work is looked for in what was sent to Bedrock.)"""
    from collections import Counter

    s3 = local_aws.client("s3")
    sent: Counter[str] = Counter()
    for job in jobs:
        uri = job["input_data_config"]["s3InputDataConfig"]["s3Uri"]
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                sent.update(json.loads(line)["recordId"] for line in body.splitlines() if line.strip())
    assert sent or not jobs, "the jobs' input is gone: nothing to compare"
    return sum(1 for count in sent.values() if count > 1)


def errors_without_reason(run: PipelineRun) -> int:
    return run.query("SELECT COUNT(*) FROM call_summary_errors WHERE message IS NULL OR message = ''")[0][0]


# -- the library in-process ----------------------------------------------------------------------
class DictStateStore:
    """Stands in for Airflow's task_state_store (a per-task-instance key/value store)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def task_context(run_id: str, store: DictStateStore | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {"ti": SimpleNamespace(dag_id=DAG_ID, stats_tags={}), "run_id": run_id}
    if store is not None:
        ctx["task_state_store"] = store
    return ctx


@dataclass
class LibraryRun:
    """One nightly run of the library without Airflow's scheduler: each step is a method."""

    local_aws: Any
    warehouse: WarehouseDb
    day: dt.date
    config_path: Path = SHIPPED_CONFIG
    run_id: str = "scheduled__reliability"
    tags: dict[str, str] = field(default_factory=dict)
    kms_key_id: str | None = None
    bucket_owner: str | None = None
    plan: dict[str, Any] | None = None
    seeded: int = 0
    s3_requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def s3(self) -> Any:
        """An S3 client that records (operation, headers) of every request it sends."""
        client = self.local_aws.client("s3")

        def record(request: Any, event_name: str, **_: Any) -> None:
            self.s3_requests.append((event_name.rsplit(".", 1)[-1], dict(request.headers.items())))

        client.meta.events.register("before-send.s3", record)
        return client

    @property
    def owner(self) -> dict[str, str]:
        return {"ExpectedBucketOwner": self.bucket_owner} if self.bucket_owner else {}

    @property
    def config(self) -> Any:
        from bedrock_batch.config import load_pipeline

        return load_pipeline(self.config_path)

    def prepare(self, seed_count: int = 300, run_is_live: Any = None) -> dict[str, Any]:
        from bedrock_batch.prepare import RunContext, RunPreparer, RuntimeSettings, resolve_quotas
        from bedrock_batch.windows import local_day

        ensure_bucket(self.local_aws)
        if seed_count:
            self.seeded = seed_transcripts(self.warehouse, self.day, seed_count)
        config = self.config
        settings = RuntimeSettings(
            role_arn=ROLE_ARN,
            input_bucket=BUCKET,
            output_bucket=BUCKET,
            kms_key_id=self.kms_key_id,
            expected_bucket_owner=self.bucket_owner,
        )
        preparer = RunPreparer(
            config=config,
            settings=settings,
            window=local_day(self.day, config.timezone),
            run=RunContext(dag_id=DAG_ID, run_id=self.run_id),
            warehouse=self.dwh,
            s3=self.s3(),
            quotas=resolve_quotas(config, config.model.id, None),
            run_is_live=run_is_live,
        )
        self.plan = preparer.prepare()
        return self.plan

    def release(self) -> int:
        """What the report task does once every job is collected: end the run's window claim."""
        return self.dwh.release_window(run_id=self.run_id, prompt_version=self.plan["prompt_version"])

    @property
    def dwh(self) -> Any:
        from bedrock_batch.warehouse import Warehouse, WarehouseTables

        config = self.config
        tables = WarehouseTables(
            output_table=config.warehouse.output_table,
            error_table=config.warehouse.error_table,
            pending_table=config.warehouse.pending_table,
        )
        return Warehouse(config.source.conn_id, tables, pipeline=config.name)

    def submit_operator(self, job: Mapping[str, Any]) -> Any:
        from bedrock_batch.operators import BedrockBatchSubmitOperator

        return BedrockBatchSubmitOperator(
            task_id="submit",
            job=dict(job),
            role_arn=ROLE_ARN,
            model_id=self.plan["model_id"],
            tags={"team": "reliability", **self.tags},
            timeout_hours=24,
            kms_key_id=self.kms_key_id,
            bucket_owner=self.bucket_owner,
        )

    def submit(self, job: Mapping[str, Any], store: DictStateStore | None = None) -> dict[str, Any]:
        return self.submit_operator(job).execute(task_context(self.run_id, store or DictStateStore()))

    def wait(self, job_arn: str) -> dict[str, Any]:
        """Poll until the job ends (bounded by WAIT_S)."""
        from bedrock_batch.hooks import TERMINAL_STATUSES, BedrockBatchHook

        hook = BedrockBatchHook(aws_conn_id="aws_default")
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            job = hook.get_job(job_arn)
            if job["status"] in TERMINAL_STATUSES:
                return job
            time.sleep(0.05)
        raise AssertionError(f"{job_arn} did not end within {WAIT_S}s: last {job['status']}")

    def collect(self, job: Mapping[str, Any], job_info: dict[str, Any] | None) -> Any:
        from bedrock_batch.collect import collect_job
        from bedrock_batch.models import family_for
        from bedrock_batch.staging import StagedJob

        config = self.config
        return collect_job(
            s3=self.s3(),
            warehouse=self.dwh,
            job=StagedJob.from_dict(dict(job)),
            job_info=job_info,
            family=family_for(self.plan["model_id"], config.model.invocation_type),
            run_id=self.run_id,
            prompt_version=self.plan["prompt_version"],
            model_id=self.plan["model_id"],
            max_attempts=config.max_attempts,
            owner=self.owner,
        )

    @property
    def as_pipeline_run(self) -> PipelineRun:
        return PipelineRun(self.day, 0, "", "", self.warehouse, self.seeded)

    def account(self) -> dict[str, int]:
        return self.as_pipeline_run.account()

    def account_query(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        """The single value ``sql`` selects from the warehouse."""
        return self.as_pipeline_run.query(sql, params)[0][0]

    def submitted_jobs(self) -> list[dict[str, Any]]:
        """The stand-in's jobs of this run's planned jobs (none before prepare)."""
        planned = self.plan["jobs"] if getattr(self, "plan", None) else []
        return [found for job in planned for found in self.jobs_named(job["job_name"])]

    def jobs_named(self, job_name: str) -> list[dict[str, Any]]:
        """The stand-in's jobs of one planned job (Bedrock names carry a suffix of the input's token)."""
        return [
            job
            for job in self.local_aws.admin.jobs()
            if job["job_name"] == job_name or job["job_name"].startswith(f"{job_name}-")
        ]
