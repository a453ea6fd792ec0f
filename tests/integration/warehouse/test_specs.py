"""Table and source specs refuse anything that is not a safe SQL identifier, naming the setting."""

from __future__ import annotations

import json

import pytest

from bedrock_batch.errors import ConfigError
from bedrock_batch.warehouse import SourceSpec, Warehouse, WarehouseTables, migration_files, split_statements


@pytest.mark.parametrize("name", ["call summaries", "x;DROP TABLE y", "1abc", "", "a" * 64, "s.t"])
def test_table_names_must_be_plain_identifiers(name):
    with pytest.raises(ConfigError, match=r"warehouse\.error_table"):
        WarehouseTables("call_summaries", name, "call_summary_pending")


def test_the_three_tables_must_differ():
    with pytest.raises(
        ConfigError, match=r"warehouse\.pending_table = 'Out' is already used by warehouse\.output"
    ):
        WarehouseTables("out", "err", "Out")


def test_a_pending_table_name_too_long_for_its_window_claims_table_is_refused():
    with pytest.raises(ConfigError, match=r"warehouse\.pending_table = 'p{56}' is too long"):
        WarehouseTables("out", "err", "p" * 56)


def test_a_table_named_like_the_window_claims_table_is_refused():
    with pytest.raises(ConfigError, match=r"warehouse\.output_table = 'pending_windows' is the name of"):
        WarehouseTables("pending_windows", "err", "pending")


def test_source_table_may_be_schema_qualified():
    assert SourceSpec("analytics.calls", "id", "body", "ts").table == "analytics.calls"


@pytest.mark.parametrize(
    ("kwargs", "setting"),
    [
        ({"key_column": "id)--"}, "source.key_column"),
        ({"extra_columns": ("agent id",)}, "source.extra_columns"),
        ({"extra_columns": ("attempt",)}, "source.extra_columns"),
        ({"extra_columns": ("a", "a")}, "source.extra_columns"),
        ({"table": "a.b.c"}, "source.table"),
    ],
)
def test_source_spec_names_the_bad_setting(kwargs, setting):
    spec = {"table": "calls", "key_column": "id", "text_column": "body", "timestamp_column": "ts", **kwargs}

    with pytest.raises(ConfigError, match=setting.replace(".", r"\.")):
        SourceSpec(**spec)


def test_warehouse_refuses_a_connection_that_is_not_sqlite_or_postgres(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE_HTTP", json.dumps({"conn_type": "http", "host": "127.0.0.1"}))
    wh = Warehouse("warehouse_http", WarehouseTables("o", "e", "p"), pipeline="p")

    with pytest.raises(ConfigError, match="'warehouse_http' has conn_type 'http'"):
        wh.ensure_schema()


def test_statements_are_split_without_comments():
    sql = "-- a comment; with a semicolon\nCREATE TABLE a (x INT);\n\n-- another\nCREATE INDEX i ON a (x);\n"

    assert split_statements(sql) == ["CREATE TABLE a (x INT)", "CREATE INDEX i ON a (x)"]


def test_only_numbered_sql_files_are_migrations(tmp_path):
    for name in ("0002_more.sql", "0001_create.sql", "demo_source.sql", "notes.txt"):
        (tmp_path / name).write_text("SELECT 1")

    assert [(version, path.name) for version, path in migration_files(tmp_path)] == [
        (1, "0001_create.sql"),
        (2, "0002_more.sql"),
    ]


def test_a_dir_without_migrations_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no versioned DDL"):
        migration_files(tmp_path)
