"""Warehouse tests run the same specification on SQLite and on a real Postgres server."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pytest

from bedrock_batch.warehouse import SourceSpec, Warehouse, WarehouseTables
from include.demo_data import source_ddl

TABLES = WarehouseTables("call_summaries", "call_summary_errors", "call_summary_pending")
SOURCE = SourceSpec("call_transcripts", "call_id", "transcript", "started_at", ("agent_id", "customer_id"))
PROMPT = "v1"
MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_db(request: pytest.FixtureRequest):
    """An empty warehouse behind ``warehouse_default``, once per dialect."""
    return request.getfixturevalue(f"{request.param}_warehouse")


@pytest.fixture
def warehouse(warehouse_db) -> Warehouse:
    """A ``Warehouse`` with its schema applied and an empty demo source table."""
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls")
    wh.ensure_schema()
    execute(warehouse_db, source_ddl())
    return wh


def execute(db, statements: Iterable[str]) -> None:
    """Run parameterless statements in one transaction."""
    conn = db.connect()
    try:
        cur = conn.cursor()
        for statement in statements:
            cur.execute(statement)
        conn.commit()
    finally:
        conn.close()


def insert_calls(db, rows: Iterable[tuple[str | None, datetime, str]]) -> None:
    """Insert (call_id, started_at, transcript) rows into the demo source table."""
    conn = db.connect()
    try:
        cur = conn.cursor()
        for call_id, started_at, text in rows:
            stamp = started_at.strftime("%Y-%m-%d %H:%M:%S") if db.dialect == "sqlite" else started_at
            cur.execute(
                "INSERT INTO call_transcripts (call_id, started_at, agent_id, customer_id, transcript)"
                f" VALUES ({', '.join([db.placeholder] * 5)})",
                (call_id, stamp, "agent-001", "cust-00001", text),
            )
        conn.commit()
    finally:
        conn.close()


def query(db, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (``?`` placeholders, adapted to the dialect) as plain tuples."""
    conn = db.connect()
    try:
        cur = conn.cursor()
        cur.execute(sql.replace("?", db.placeholder), params)
        return [tuple(row) for row in cur.fetchall()]
    finally:
        conn.close()
