"""Fixtures of the reliability suite: a DAG runner per module and fresh SQLite warehouses."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.fixtures.pipeline_run import PipelineRun
from tests.reliability.support import ACCOUNT_ID, KMS_KEY_ARN, DagRunner, sqlite_warehouse_at


@pytest.fixture(scope="module")
def dag_runner(local_aws, airflow_db, tmp_path_factory) -> DagRunner:
    """Runs the real DAG (``airflow_db`` migrates the metadata DB); env goes to the subprocess only."""
    local_aws.admin.reset_faults()
    local_aws.admin.reset_quotas()
    return DagRunner(local_aws, tmp_path_factory.mktemp("dag-runs"))


@pytest.fixture
def fresh_warehouse(tmp_path):
    """An empty SQLite warehouse file (not bound to any connection: DagRunner passes it per run)."""
    return sqlite_warehouse_at(tmp_path / "warehouse.sqlite")


NOISY_DAY = dt.date(2026, 11, 3)
NOISY_FAULTS = {
    "throttle": {"CreateModelInvocationJob": 1, "GetModelInvocationJob": 2},
    "internal_error": {"CreateModelInvocationJob": 1, "GetModelInvocationJob": 1},
    "record_error_rate": 0.05,
}


@pytest.fixture(scope="session")
def noisy_hardened_run(local_aws, airflow_db, tmp_path_factory) -> PipelineRun:
    """
    One nightly run on a hostile but healthy service, with the config locked down.

    Create and Get are throttled (429) and answer 500 once, 5% of records fail with a per-record
    error, and the config sets SSE-KMS and the expected bucket owner. Shared by the fault and the
    security tests (one DAG run, about 20 s, instead of one per assertion).
    """
    local_aws.admin.reset_faults()
    local_aws.admin.reset_quotas()
    local_aws.admin.set_faults(**NOISY_FAULTS)
    workdir = tmp_path_factory.mktemp("noisy-run")
    try:
        run = DagRunner(local_aws, workdir).run(
            sqlite_warehouse_at(workdir / "warehouse.sqlite"),
            NOISY_DAY,
            config_changes={
                "staging.kms_key_id": KMS_KEY_ARN,
                "staging.expected_bucket_owner": ACCOUNT_ID,
            },
        )
    finally:
        local_aws.admin.reset_faults()
    return run
