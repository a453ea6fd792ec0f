"""schema_script: the SQL a DBA runs where the pipeline's own user may not CREATE in the schema."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.warehouse import ErrorRow, Warehouse, WarehouseTables, migration_files, schema_script

from .conftest import TABLES, query

ROOT = Path(__file__).resolve().parents[3]
ALL_VERSIONS = {version for version, _ in migration_files(ROOT / "include" / "sql")}
OTHER_TABLES = WarehouseTables("other_summaries", "other_errors", "other_pending")


def columns(db, table: str) -> list[str]:
    if db.dialect == "sqlite":
        return [row[1] for row in query(db, f"PRAGMA table_info({table})")]
    return [
        row[0]
        for row in query(
            db,
            "SELECT column_name FROM information_schema.columns WHERE table_name = ?"
            " ORDER BY ordinal_position",
            (table,),
        )
    ]


def run_script(db, sql: str) -> None:
    conn = db.connect()
    try:
        if db.dialect == "sqlite":
            conn.executescript(sql)
        else:
            conn.autocommit = True  # the script holds its own BEGIN and COMMIT
            conn.cursor().execute(sql)
    finally:
        conn.close()


def grants(script: str, role: str) -> str:
    """The GRANT statements the script names in its closing comments, for ``role``."""
    return "".join(
        line.removeprefix("-- ").replace("<pipeline user>", role)
        for line in script.splitlines()
        if line.startswith("-- GRANT ")
    )


@pytest.fixture
def restricted_user(postgres_warehouse, monkeypatch) -> Iterator[str]:
    """A role that may not CREATE in the schema, as the warehouse connection's user."""
    role = f"pipeline_{uuid.uuid4().hex[:8]}"
    run_script(postgres_warehouse, f"CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    restricted = dataclasses.replace(postgres_warehouse.server, user=role)
    monkeypatch.setenv(f"AIRFLOW_CONN_{postgres_warehouse.conn_id.upper()}", restricted.airflow_uri)
    try:
        yield role
    finally:
        run_script(postgres_warehouse, f"DROP OWNED BY {role}; DROP ROLE {role}")


def test_the_script_makes_the_tables_ensure_schema_makes_and_records_every_version(warehouse_db):
    run_script(warehouse_db, schema_script(TABLES))
    warehouse = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls")

    assert warehouse.ensure_schema() == []
    assert warehouse.applied_versions() == ALL_VERSIONS
    tables = [*TABLES.placeholders().values(), "bedrock_batch_schema_migrations"]
    scripted = {table: columns(warehouse_db, table) for table in tables}
    assert all(scripted.values())

    run_script(warehouse_db, "".join(f"DROP TABLE {table};" for table in tables))
    warehouse.ensure_schema()
    assert {table: columns(warehouse_db, table) for table in tables} == scripted


def test_the_script_after_a_version_holds_only_the_later_ones():
    script = schema_script(TABLES, after=max(ALL_VERSIONS) - 1, now=datetime(2026, 11, 23, 7, 30, tzinfo=UTC))
    assert f"VALUES ('{TABLES.key}', {max(ALL_VERSIONS)}, '2026-11-23 07:30:00')" in script
    assert script.count("INSERT INTO bedrock_batch_schema_migrations") == 1


def test_versions_recorded_under_the_pipelines_name_count_next_to_a_later_script_of_the_new_ones(
    warehouse_db,
):
    """An upgrade where a DBA ran only the newest version's script, over versions an earlier release
    recorded under the pipeline's name."""
    newest = max(ALL_VERSIONS)
    run_script(warehouse_db, schema_script(TABLES))
    run_script(
        warehouse_db,
        f"UPDATE bedrock_batch_schema_migrations SET pipeline = 'summarize_calls' WHERE version < {newest}",
    )
    warehouse = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls")

    assert warehouse.applied_versions() == ALL_VERSIONS
    assert warehouse.ensure_schema() == []


@pytest.mark.postgres
def test_a_user_who_may_not_create_runs_on_tables_a_dba_made_with_the_script(
    postgres_warehouse, restricted_user
):
    script = schema_script(TABLES)
    run_script(postgres_warehouse, script)
    run_script(postgres_warehouse, grants(script, restricted_user))
    warehouse = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")

    assert warehouse.ensure_schema() == []
    assert warehouse.applied_versions() == ALL_VERSIONS
    rejected = ErrorRow("k1", "prepare", "too_long", "too long", retryable=False, attempt=1)
    assert warehouse.record_rejections([rejected], run_id="r1", prompt_version="v1") == 1
    assert warehouse.carry_over(["k2"], run_id="r1", prompt_version="v1") == 1
    with pytest.raises(ConfigError, match="may not create"):  # the role really may not CREATE
        Warehouse(postgres_warehouse.conn_id, OTHER_TABLES, pipeline="other").ensure_schema()


@pytest.mark.postgres
def test_a_user_who_may_not_create_is_told_the_script_that_makes_the_tables(
    postgres_warehouse, restricted_user
):
    warehouse = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")
    with pytest.raises(ConfigError) as raised:
        warehouse.ensure_schema()
    assert "`make schema-sql PIPELINE=summarize_calls`" in str(raised.value)


@pytest.mark.postgres
def test_a_user_who_may_not_create_is_told_which_script_a_new_version_needs(
    postgres_warehouse, restricted_user
):
    newest = max(ALL_VERSIONS)
    script = schema_script(TABLES)
    run_script(postgres_warehouse, script)
    run_script(postgres_warehouse, grants(script, restricted_user))
    # as if the DBA ran the script of the release before the newest migration
    run_script(postgres_warehouse, f"DELETE FROM bedrock_batch_schema_migrations WHERE version = {newest}")
    warehouse = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")

    expected = f"make schema-sql PIPELINE=summarize_calls AFTER={newest - 1}"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        warehouse.ensure_schema()


def test_make_schema_sql_prints_the_script_of_a_pipeline():
    printed = subprocess.run(
        [sys.executable, "-m", "scripts.schema_sql", "summarize_calls"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": f"{ROOT / 'plugins'}:{ROOT}"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    stamp = re.compile(r"'\d{4}-\d\d-\d\d \d\d:\d\d:\d\d'")
    assert stamp.sub("'T'", printed) == stamp.sub("'T'", schema_script(TABLES))
