"""schema_script: the SQL a DBA runs where the pipeline's own user may not CREATE in the schema."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.warehouse import Warehouse, migration_files, schema_script

from .conftest import TABLES, query

ROOT = Path(__file__).resolve().parents[3]
ALL_VERSIONS = {version for version, _ in migration_files(ROOT / "include" / "sql")}


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
    script = schema_script(TABLES, after=max(ALL_VERSIONS) - 1)
    assert f"VALUES ('{TABLES.key}', {max(ALL_VERSIONS)}, CURRENT_TIMESTAMP)" in script
    assert script.count("INSERT INTO bedrock_batch_schema_migrations") == 1


@pytest.mark.postgres
def test_a_user_who_may_not_create_runs_on_tables_a_dba_made_with_the_script(postgres_warehouse, monkeypatch):
    server = postgres_warehouse.server
    role = f"pipeline_{uuid.uuid4().hex[:8]}"
    run_script(postgres_warehouse, schema_script(TABLES))
    run_script(
        postgres_warehouse,
        f"CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    )
    restricted = dataclasses.replace(server, user=role)
    monkeypatch.setenv(f"AIRFLOW_CONN_{postgres_warehouse.conn_id.upper()}", restricted.airflow_uri)
    try:
        warehouse = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")

        assert warehouse.ensure_schema() == []
        assert warehouse.applied_versions() == ALL_VERSIONS
        with pytest.raises(Exception, match="permission denied"):  # the role really may not CREATE
            run_script(
                dataclasses.replace(postgres_warehouse, connect=restricted.connect), "CREATE TABLE t (x int)"
            )
    finally:
        run_script(postgres_warehouse, f"DROP OWNED BY {role}; DROP ROLE {role}")


@pytest.mark.postgres
def test_a_user_who_may_not_create_is_told_which_script_a_new_version_needs(postgres_warehouse, monkeypatch):
    server = postgres_warehouse.server
    role = f"pipeline_{uuid.uuid4().hex[:8]}"
    newest = max(ALL_VERSIONS)
    run_script(postgres_warehouse, schema_script(TABLES))
    run_script(  # as if the DBA ran the script of the release before the newest migration
        postgres_warehouse,
        f"DELETE FROM bedrock_batch_schema_migrations WHERE version = {newest};"
        f" CREATE ROLE {role} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
        f" GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
    )
    monkeypatch.setenv(
        f"AIRFLOW_CONN_{postgres_warehouse.conn_id.upper()}",
        dataclasses.replace(server, user=role).airflow_uri,
    )
    try:
        warehouse = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")
        expected = f"make schema-sql PIPELINE=summarize_calls AFTER={newest - 1}"
        with pytest.raises(ConfigError, match=re.escape(expected)):
            warehouse.ensure_schema()
    finally:
        run_script(postgres_warehouse, f"DROP OWNED BY {role}; DROP ROLE {role}")


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
    assert printed == schema_script(TABLES)
