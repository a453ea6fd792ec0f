"""Fixtures of the pipeline tests: a harness over the stand-in and an empty SQLite or Postgres warehouse."""

from __future__ import annotations

import pytest

from tests.integration.pipeline.support import PipelineHarness


@pytest.fixture
def harness(aws_env, local_aws_clean, sqlite_warehouse) -> PipelineHarness:
    """The shipped pipeline on a fresh SQLite warehouse with the demo source table.

    The stand-in accepts jobs of any size, so tests can run jobs of a few records.
    """
    local_aws_clean.admin.set_quotas(min_records_per_job=1)
    pipeline = PipelineHarness(sqlite_warehouse, local_aws_clean).configure()
    pipeline.create_source()
    return pipeline


@pytest.fixture
def pg_harness(aws_env, local_aws_clean, postgres_warehouse) -> PipelineHarness:
    """The shipped pipeline on a fresh Postgres database with the demo source table."""
    local_aws_clean.admin.set_quotas(min_records_per_job=1)
    pipeline = PipelineHarness(postgres_warehouse, local_aws_clean).configure()
    pipeline.create_source()
    return pipeline
