"""Drive the library's pipeline steps directly against the stand-in and a test warehouse.

``PipelineHarness`` holds one pipeline config, its warehouse and boto3 clients of the stand-in, and
runs the steps the DAG runs (prepare, submit, wait, collect, on demand) as plain calls, so a test can
check what each step leaves in S3, in the stand-in and in the warehouse.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml

from bedrock_batch.collect import JobOutcome, collect_job
from bedrock_batch.config import PipelineConfig
from bedrock_batch.hooks import ACTIVE_STATUSES, BedrockBatchHook
from bedrock_batch.models import family_for, family_of_job
from bedrock_batch.on_demand import read_records, read_since, summarize_small_batch
from bedrock_batch.prepare import RunContext, RunPreparer, RuntimeSettings, run_job_marker
from bedrock_batch.quotas import BatchQuotas
from bedrock_batch.s3paths import iter_lines, split_s3_uri
from bedrock_batch.staging import StagedJob, iter_record_map
from bedrock_batch.warehouse import Warehouse, WarehouseTables
from bedrock_batch.windows import local_day

REPO = Path(__file__).resolve().parents[3]
SHIPPED_CONFIG = REPO / "include" / "pipelines" / "summarize_calls.yaml"
DAG_ID = "summarize_calls"
BUCKET = "bedrock-batch-pipeline-it"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchPipelineTests"
DAY = dt.date(2026, 11, 10)
WAIT_S = 30.0

#: A source table without a primary key, so that NULL and duplicate keys can be stored.
LOOSE_SOURCE_DDL = (
    "CREATE TABLE IF NOT EXISTS call_transcripts (call_id TEXT, started_at TIMESTAMP,"
    " agent_id TEXT, customer_id TEXT, transcript TEXT)"
)


def pipeline_config(changes: Mapping[str, Any] | None = None) -> PipelineConfig:
    """The shipped ``summarize_calls`` config with ``{"dotted.path": value}`` changes applied."""
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    for dotted, value in (changes or {}).items():
        *parents, leaf = dotted.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return PipelineConfig.model_validate(raw)


def transcript(index: int) -> str:
    return (
        f"Agent: Thanks for calling, this is call {index}. How can I help?\n"
        f"Customer: My invoice number {index} shows a charge I do not recognise.\n"
        "Agent: I have refunded the duplicate charge; it will show within five days.\n"
        "Customer: Great, thank you."
    )


def tiny_quotas(**values: int) -> BatchQuotas:
    """Quotas small enough to split a few dozen records (bytes generous unless given)."""
    base = {"min_records_per_job": 5, "max_records_per_file": 1000, "max_records_per_job": 1000}
    return BatchQuotas(**{**base, **values})


@dataclass
class Prepared:
    """What one prepare call gave: the XCom plan and the preparer (for its counts)."""

    plan: dict[str, Any]
    preparer: RunPreparer
    run_id: str

    @property
    def jobs(self) -> list[StagedJob]:
        return [StagedJob.from_dict(job) for job in self.plan["jobs"]]

    @property
    def counts(self) -> dict[str, Any]:
        return self.plan["counts"]


@dataclass
class PipelineHarness:
    """One pipeline on the stand-in and a warehouse (``WarehouseDb`` of tests/fixtures/postgres.py)."""

    db: Any
    local_aws: Any
    config: PipelineConfig = field(default_factory=pipeline_config)
    runs: int = 0

    def __post_init__(self) -> None:
        self.s3 = self.local_aws.client("s3")
        with contextlib.suppress(self.s3.exceptions.BucketAlreadyOwnedByYou):
            self.s3.create_bucket(Bucket=BUCKET)
        self.hook = BedrockBatchHook(aws_conn_id="aws_default")
        self.prefix = f"it-{uuid.uuid4().hex[:8]}"

    # -- set-up -------------------------------------------------------------------------------------

    def configure(self, **changes: Any) -> PipelineHarness:
        """Apply config changes given as ``section__field=value`` (e.g. ``small_batch__policy``)."""
        self.config = pipeline_config(
            {
                "staging.input_prefix": f"{self.prefix}/input",
                "staging.output_prefix": f"{self.prefix}/output",
                **{name.replace("__", "."): value for name, value in changes.items()},
            }
        )
        return self

    @property
    def warehouse(self) -> Warehouse:
        tables = WarehouseTables(
            self.config.warehouse.output_table,
            self.config.warehouse.error_table,
            self.config.warehouse.pending_table,
        )
        return Warehouse(self.db.conn_id, tables, pipeline=self.config.name)

    def create_source(self, *, loose: bool = False) -> None:
        from include.demo_data import source_ddl

        self.execute([LOOSE_SOURCE_DDL] if loose else source_ddl())

    def insert(self, rows: Iterable[tuple[Any, Any]], day: dt.date = DAY) -> list[Any]:
        """Insert (call_id, transcript) rows spread over ``day``; returns the keys in order."""
        mark = self.db.placeholder
        keys, params = [], []
        for index, (key, text) in enumerate(rows):
            moment = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=10 * index + 1)
            stamp = moment.strftime("%Y-%m-%d %H:%M:%S") if self.db.dialect == "sqlite" else moment
            params.append((key, stamp, "agent-001", "cust-00001", text))
            keys.append(key)
        conn = self.db.connect()
        try:
            cur = conn.cursor()
            cur.executemany(
                "INSERT INTO call_transcripts (call_id, started_at, agent_id, customer_id, transcript)"
                f" VALUES ({', '.join([mark] * 5)})",
                params,
            )
            conn.commit()
        finally:
            conn.close()
        return keys

    def add_calls(self, count: int, *, day: dt.date = DAY, tag: str = "c") -> list[str]:
        """``count`` good transcripts on ``day``, keys ``{tag}-{day}-{n}``; every input line has one size."""
        return self.insert(
            ((f"{tag}-{day:%Y%m%d}-{n:04d}", transcript(1000 + n)) for n in range(count)), day=day
        )

    def execute(self, statements: Iterable[str], params: tuple[Any, ...] = ()) -> None:
        conn = self.db.connect()
        try:
            cur = conn.cursor()
            for statement in statements:
                cur.execute(statement.replace("?", self.db.placeholder), params)
            conn.commit()
        finally:
            conn.close()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        conn = self.db.connect()
        try:
            cur = conn.cursor()
            cur.execute(sql.replace("?", self.db.placeholder), params)
            return [tuple(row) for row in cur.fetchall()]
        finally:
            conn.close()

    # -- the steps ----------------------------------------------------------------------------------

    def settings(self, **values: Any) -> RuntimeSettings:
        return RuntimeSettings(role_arn=ROLE_ARN, input_bucket=BUCKET, output_bucket=BUCKET, **values)

    def prepare(
        self,
        quotas: BatchQuotas,
        *,
        run_id: str | None = None,
        day: dt.date = DAY,
        run_is_live: Callable[[str], bool | None] = lambda other_run_id: False,
        **settings: Any,
    ) -> Prepared:
        """Prepare a run (a new run id unless given) of ``day``'s window.

        ``run_is_live`` answers for other runs as Airflow would; by default every other run is over
        (the harness runs one run at a time).
        """
        if run_id is None:
            self.runs += 1
            # Unique per harness: the session's stand-in remembers every job name and request token.
            run_id = f"scheduled__{day.isoformat()}T00:00:00+00:00-{self.prefix}-{self.runs}"
        preparer = RunPreparer(
            config=self.config,
            settings=self.settings(**settings),
            window=local_day(day, self.config.timezone),
            run=RunContext(dag_id=DAG_ID, run_id=run_id),
            warehouse=self.warehouse,
            s3=self.s3,
            quotas=quotas,
            run_is_live=run_is_live,
            # As the prepare task asks: the stand-in's jobs named after this run.
            earlier_jobs=lambda: self.hook.jobs_named(run_job_marker(DAG_ID, run_id)),
            job_tags=self.hook.get_job_tags,
        )
        return Prepared(preparer.prepare(), preparer, run_id)

    def submit(
        self,
        job: StagedJob,
        *,
        run_id: str,
        tags: Mapping[str, str] | None = None,
        model_id: str | None = None,
    ) -> str:
        from bedrock_batch.operators import bedrock_job_name, staged_job_token

        token = staged_job_token(dag_id=DAG_ID, run_id=run_id, job=job)
        return self.hook.create_job(
            # Named as the submit operator names it: the planned name plus 8 characters of the token.
            job_name=bedrock_job_name(job.job_name, token),
            role_arn=ROLE_ARN,
            model_id=model_id or self.config.model.id,
            input_s3_uri=job.input_s3_uri,
            output_s3_uri=job.output_s3_uri,
            client_request_token=token,
            tags={"pipeline": self.config.name, **(tags or {})},
            invocation_type=self.config.model.invocation_type,
        )

    def wait(self, job_arn: str, *, until: frozenset[str] | None = None) -> dict[str, Any]:
        """Poll the job (bounded) until it leaves the active states, or reaches one of ``until``."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            info = self.hook.get_job(job_arn)
            if (until is not None and info["status"] in until) or (
                until is None and info["status"] not in ACTIVE_STATUSES
            ):
                return info
            time.sleep(0.05)
        raise AssertionError(f"job {job_arn} still {info['status']} after {WAIT_S}s")

    def collect(self, prepared: Prepared, job: StagedJob, job_info: Mapping[str, Any] | None) -> JobOutcome:
        return collect_job(
            s3=self.s3,
            warehouse=self.warehouse,
            job=job,
            job_info=dict(job_info) if job_info else None,
            family=family_of_job(
                job_info,
                model_id=prepared.plan["model_id"],
                invocation_type=self.config.model.invocation_type,
            ),
            run_id=prepared.run_id,
            prompt_version=prepared.plan["prompt_version"],
            model_id=prepared.plan["model_id"],
            max_attempts=self.config.max_attempts,
            owner={},
        )

    def run_jobs(self, prepared: Prepared, *, tags: Mapping[str, str] | None = None) -> list[JobOutcome]:
        """Submit, wait for and collect every job of the plan."""
        outcomes = []
        for job in prepared.jobs:
            info = self.wait(self.submit(job, run_id=prepared.run_id, tags=tags))
            outcomes.append(self.collect(prepared, job, info))
        return outcomes

    def run_on_demand(self, prepared: Prepared, runtime: Any = None) -> dict[str, int]:
        """What the on-demand task does: invoke the staged small batch and load it (``runtime``: a
        bedrock-runtime client, the stand-in's by default)."""
        small = prepared.plan["on_demand"]
        records = list(read_records(self.s3, small["records_s3_uri"], {}))
        _, counts = summarize_small_batch(
            self.warehouse,
            records,
            runtime=runtime or self.local_aws.client("bedrock-runtime"),
            family=family_for(prepared.plan["model_id"], prepared.plan["invocation_type"]),
            model_id=prepared.plan["model_id"],
            invocation_type=prepared.plan["invocation_type"],
            concurrency=self.config.small_batch.on_demand_concurrency,
            run_id=prepared.run_id,
            prompt_version=prepared.plan["prompt_version"],
            max_attempts=self.config.max_attempts,
            read_since=read_since(small),
        )
        return counts

    # -- where the rows went ------------------------------------------------------------------------

    def staged_keys(self, prepared: Prepared) -> list[str]:
        """Source keys in the map files of the plan's jobs (the records that would be submitted)."""
        planned = prepared.plan["planned_jobs"] if prepared.plan["dry_run"] else prepared.plan["jobs"]
        return [key for job in planned for _, key, _ in iter_record_map(self.s3, job["map_s3_uri"])]

    def on_demand_keys(self, prepared: Prepared) -> list[str]:
        small = prepared.plan.get("on_demand")
        return (
            [record.source_key for record in read_records(self.s3, small["records_s3_uri"], {})]
            if small
            else []
        )

    def input_lines(self, job: StagedJob) -> list[list[dict[str, Any]]]:
        """The parsed lines of each input file of ``job``."""
        files = []
        for staged in job.files:
            bucket, key = split_s3_uri(staged.s3_uri)
            files.append([orjson.loads(line) for line in iter_lines(self.s3, bucket, key) if line.strip()])
        return files

    def placements(self, prepared: Prepared) -> dict[str, Counter[str]]:
        """For every key the run read: where it went (staged, rejected, carried_over, on_demand)."""
        where: dict[str, Counter[str]] = {}
        for key in self.staged_keys(prepared):
            where.setdefault(key, Counter())["staged"] += 1
        for key in self.on_demand_keys(prepared):
            where.setdefault(key, Counter())["on_demand"] += 1
        if not prepared.plan["dry_run"]:
            for (key,) in self.query(
                "SELECT source_key FROM call_summary_errors WHERE run_id = ? AND stage = 'build'",
                (prepared.run_id,),
            ):
                where.setdefault(key, Counter())["rejected"] += 1
            for (key,) in self.query(
                "SELECT source_key FROM call_summary_pending"
                " WHERE last_run_id = ? AND reason = 'carried_over'",
                (prepared.run_id,),
            ):
                where.setdefault(key, Counter())["carried_over"] += 1
        return where

    def table(self, name: str, columns: str) -> list[tuple[Any, ...]]:
        return sorted(self.query(f"SELECT {columns} FROM {name}"), key=repr)
