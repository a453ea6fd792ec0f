"""Smoke test of `make bench`: each scenario function runs on a few hundred records (no timings).

Benchmarks are not tests; this only keeps the bench code from rotting as the library changes.
"""

from __future__ import annotations

import json

import pytest

from bench import load, stage
from bench.common import BUCKET, ENDPOINT_ENV, s3_client
from bench.postgres import Postgres
from bench.report import row, table
from bench.runner import Measured, measure, median_run

SIZE = 200


@pytest.fixture
def bench_s3(local_aws, monkeypatch):
    monkeypatch.setenv(ENDPOINT_ENV, local_aws.endpoint_url)
    s3 = s3_client()
    if BUCKET not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=BUCKET)
    return s3


def test_project_path_stages_every_record_into_the_null_sink():
    result = stage.project(SIZE, sink="null")

    assert result["records"] == SIZE
    assert result["bytes"] > SIZE * 2000


def test_serialization_limit_serializes_the_bytes_the_stager_writes():
    assert stage.serialize_limit(SIZE)["bytes"] == stage.project(SIZE, sink="null")["bytes"]


def test_stage_paths_write_to_s3_and_leave_nothing_behind(bench_s3):
    results = [stage.project(SIZE), stage.baseline(SIZE), stage.upload_limit(SIZE)]

    assert [r["records"] for r in results] == [SIZE, SIZE, SIZE]
    assert bench_s3.list_objects_v2(Bucket=BUCKET, Prefix="stage/").get("KeyCount", 0) == 0


def test_load_paths_load_every_summary_into_sqlite(bench_s3, sqlite_warehouse, tmp_path):
    plan = load.setup(SIZE)
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(plan))

    project = load.project(SIZE, jobs_file=str(jobs_file))
    baseline = load.baseline(SIZE, jobs_file=str(jobs_file))

    assert project["rows"] == baseline["rows"] == SIZE - plan["errors"] > 0


def test_measurement_runs_in_its_own_process_and_reports_its_peak_rss():
    measured = measure("bench.stage:project", size=SIZE, sink="null", timeout=120)

    assert measured.result["records"] == SIZE
    assert measured.peak_rss_mb > 10


def test_the_median_run_of_repeats_is_kept_with_its_own_peak_rss_and_every_rate():
    def run(name: str, seconds: int, rss: int) -> Measured:
        result = {"records": 100, "seconds": seconds, "name": name}
        return Measured(result, peak_rss_mb=rss, wall_seconds=1, cpu_seconds=1)

    median = median_run([run("middle", 2, 50), run("fast", 1, 70), run("slow", 4, 60)])

    assert median.result["name"] == "middle"
    assert median.peak_rss_mb == 50
    assert median.result["rates"] == [50, 100, 25]


def test_table_has_a_line_per_row_and_shows_errors():
    rows = [
        row("stage_s3", SIZE, "records/s", 200.0, baseline=100.0, target=">= 2 x baseline", met=True),
        row("load_postgres", SIZE, "records/s", None, error="no Postgres"),
    ]

    lines = table(rows).splitlines()

    assert rows[0]["ratio"] == pytest.approx(2.0)
    assert len(lines) == 4
    assert "ERROR: no Postgres" in lines[3]


@pytest.mark.postgres
def test_postgres_run_in_writes_wal_checkpoints_it_and_leaves_no_table(postgres_server):
    admin = postgres_server.with_dbname("postgres").connect(autocommit=True)
    try:
        with admin.cursor() as cur:
            cur.execute("SELECT pg_current_wal_lsn()")
            (before,) = cur.fetchone()

            Postgres(postgres_server.host, postgres_server.port, postgres_server.user).run_in(16)

            cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (before,))
            (written,) = cur.fetchone()
            cur.execute("SELECT pg_wal_lsn_diff(redo_lsn, %s) FROM pg_control_checkpoint()", (before,))
            (checkpointed,) = cur.fetchone()
            cur.execute("SELECT to_regclass('bench_run_in')")
            (table,) = cur.fetchone()
    finally:
        admin.close()
    assert written >= 12 * 1024 * 1024
    assert checkpointed >= 12 * 1024 * 1024
    assert table is None
