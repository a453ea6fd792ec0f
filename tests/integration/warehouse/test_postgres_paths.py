"""Postgres-only behaviour: server-side reading and the COPY load path under both psycopg drivers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bedrock_batch.warehouse import ErrorRow, SummaryRow, Warehouse

from .conftest import MODEL, PROMPT, SOURCE, TABLES, execute, insert_calls, query

pytestmark = pytest.mark.postgres

DAY = datetime(2026, 11, 20, tzinfo=UTC)


@pytest.fixture(params=["psycopg3", "psycopg2"])
def pg_warehouse(request, postgres_warehouse, monkeypatch):
    """A Warehouse on Postgres whose hook connects with the given driver."""
    monkeypatch.setattr(
        "airflow.providers.postgres.hooks.postgres.USE_PSYCOPG3", request.param == "psycopg3", raising=True
    )
    from include.demo_data import source_ddl

    wh = Warehouse(postgres_warehouse.conn_id, TABLES, pipeline="summarize_calls")
    conn = wh.hook.get_conn()
    driver = type(conn).__module__.split(".")[0]
    conn.close()
    assert driver == {"psycopg3": "psycopg", "psycopg2": "psycopg2"}[request.param]
    wh.ensure_schema()
    execute(postgres_warehouse, source_ddl())
    return wh


def test_rows_are_fetched_from_a_server_side_cursor(pg_warehouse, postgres_warehouse):
    insert_calls(postgres_warehouse, [(f"k{i}", DAY + timedelta(minutes=i), "t") for i in range(5)])
    rows = pg_warehouse.iter_source_rows(
        SOURCE, start=DAY, end=DAY + timedelta(days=1), prompt_version=PROMPT, max_attempts=3, chunk_size=2
    )

    first = next(rows)
    others = query(
        postgres_warehouse,
        "SELECT query FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    rest = list(rows)

    assert first["source_key"] == "k0" and len(rest) == 4
    assert any(q.upper().startswith("FETCH FORWARD 2") for (q,) in others), others


def test_copy_load_is_idempotent_and_keeps_special_characters(pg_warehouse, postgres_warehouse):
    text = "tab\there\nnew line \\N backslash 谢谢 🙂"
    results = [SummaryRow("a", text, 10, 2, "end_turn"), SummaryRow("b", None, None, None, None)]
    errors = [ErrorRow("c", "model", "429", "slow\tdown", retryable=True, attempt=1)]

    for _ in range(2):
        pg_warehouse.load_job(
            results,
            errors,
            run_id="run-1",
            job_arn=None,
            prompt_version=PROMPT,
            model_id=MODEL,
            max_attempts=3,
        )

    assert query(postgres_warehouse, f"SELECT source_key, summary FROM {TABLES.output_table} ORDER BY 1") == [
        ("a", text),
        ("b", None),
    ]
    assert query(postgres_warehouse, f"SELECT message, retryable FROM {TABLES.error_table}") == [
        ("slow\tdown", True)
    ]
    assert query(postgres_warehouse, f"SELECT source_key, reason FROM {TABLES.pending_table}") == [
        ("c", "retry")
    ]


def test_pending_keys_match_an_integer_key_column(pg_warehouse, postgres_warehouse):
    from bedrock_batch.warehouse import SourceSpec

    execute(
        postgres_warehouse,
        [
            "CREATE TABLE tickets (id BIGINT PRIMARY KEY, created_at TIMESTAMPTZ, body TEXT)",
            "INSERT INTO tickets VALUES (9, '2026-11-01 00:00:00+00', 'nine')",
        ],
    )
    pg_warehouse.carry_over(["9"], run_id="run-1", prompt_version=PROMPT)

    rows = list(
        pg_warehouse.iter_source_rows(
            SourceSpec("tickets", "id", "body", "created_at"),
            start=DAY,
            end=DAY + timedelta(days=1),
            prompt_version=PROMPT,
            max_attempts=3,
        )
    )

    assert [(row["source_key"], row["text"], row["origin"]) for row in rows] == [
        ("9", "nine", "carried_over")
    ]


def test_a_nul_in_a_model_output_is_written_as_a_replacement_character_not_a_failed_load(
    pg_warehouse, postgres_warehouse, caplog
):
    results = [
        SummaryRow("a", "before\x00after", 10, 2, "end_turn"),
        SummaryRow("b", "fine", 10, 2, "end_turn"),
    ]
    errors = [ErrorRow("c", "model", "400", "bad\x00input", retryable=False, attempt=1)]

    pg_warehouse.load_job(
        results, errors, run_id="run-1", job_arn=None, prompt_version=PROMPT, model_id=MODEL, max_attempts=3
    )

    assert query(postgres_warehouse, f"SELECT source_key, summary FROM {TABLES.output_table} ORDER BY 1") == [
        ("a", "before\ufffdafter"),
        ("b", "fine"),
    ]
    assert query(postgres_warehouse, f"SELECT message FROM {TABLES.error_table}") == [("bad\ufffdinput",)]
    assert "Row of key 'a': NUL characters written as U+FFFD" in caplog.text


def test_a_nul_in_a_rerun_that_updates_rows_is_written_as_a_replacement_character(
    pg_warehouse, postgres_warehouse, caplog
):
    load(pg_warehouse, [SummaryRow("a", "first", 1, 1, "end_turn")], run_id="run-0")

    load(pg_warehouse, [SummaryRow("a", "again\x00", 1, 1, "end_turn"), SummaryRow("b", "new", 1, 1, "x")])

    assert query(postgres_warehouse, f"SELECT source_key, summary FROM {TABLES.output_table} ORDER BY 1") == [
        ("a", "again\ufffd"),
        ("b", "new"),
    ]
    assert "Row of key 'a': NUL characters written as U+FFFD" in caplog.text


@pytest.mark.parametrize("loaded_at_type", ["TIMESTAMP", "TIMESTAMPTZ"])  # binary COPY, text COPY
def test_a_nul_in_a_rerun_is_cleaned_and_warned_about_once_although_the_rows_are_copied_twice(
    pg_warehouse, postgres_warehouse, caplog, loaded_at_type
):
    migration = f"ALTER TABLE {TABLES.output_table} ALTER COLUMN loaded_at TYPE {loaded_at_type}"
    execute(postgres_warehouse, [migration])
    load(pg_warehouse, [SummaryRow("a", "first", 1, 1, "end_turn")], run_id="run-0")
    caplog.clear()

    load(pg_warehouse, [SummaryRow("a", "again\x00", 1, 1, "end_turn"), SummaryRow("b", "new", 1, 1, "x")])

    assert query(postgres_warehouse, f"SELECT summary FROM {TABLES.output_table} ORDER BY 1") == [
        ("again\ufffd",),
        ("new",),
    ]
    assert caplog.text.count("Row of key 'a': NUL characters written as U+FFFD") == 1


def test_rows_load_as_the_table_types_its_columns_after_a_migration(pg_warehouse, postgres_warehouse):
    execute(postgres_warehouse, [f"ALTER TABLE {TABLES.output_table} ALTER COLUMN input_tokens TYPE BIGINT"])

    load(pg_warehouse, [SummaryRow("a", "big", 5_000_000_000, 1, "end_turn")])

    assert query(postgres_warehouse, f"SELECT input_tokens FROM {TABLES.output_table}") == [(5_000_000_000,)]


def test_rows_load_into_a_table_whose_timestamp_was_migrated_to_timestamptz(pg_warehouse, postgres_warehouse):
    execute(
        postgres_warehouse, [f"ALTER TABLE {TABLES.output_table} ALTER COLUMN loaded_at TYPE TIMESTAMPTZ"]
    )

    load(pg_warehouse, [SummaryRow("a", "one", 1, 1, "end_turn")])

    assert query(postgres_warehouse, f"SELECT source_key, summary FROM {TABLES.output_table}") == [
        ("a", "one")
    ]
    assert query(postgres_warehouse, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]


def load(warehouse: Warehouse, results: list[SummaryRow], *, run_id: str = "run-1") -> None:
    warehouse.load_job(
        results, [], run_id=run_id, job_arn=None, prompt_version=PROMPT, model_id=MODEL, max_attempts=3
    )


@pytest.fixture
def straight_copies(monkeypatch) -> list[bool]:
    """Whether each upsert's rows went straight into their table (``True``) or through an upsert."""
    from bedrock_batch import warehouse as module

    outcomes: list[bool] = []
    original = module._copy_if_new

    def spy(*args, **kwargs):
        outcomes.append(original(*args, **kwargs))
        return outcomes[-1]

    monkeypatch.setattr(module, "_copy_if_new", spy)
    return outcomes


def test_a_first_load_copies_rows_straight_into_the_table(pg_warehouse, postgres_warehouse, straight_copies):
    pg_warehouse.carry_over(["a"], run_id="run-0", prompt_version=PROMPT)

    load(pg_warehouse, [SummaryRow("a", "one", 1, 1, "end_turn"), SummaryRow("b", "two", 1, 1, "end_turn")])

    assert straight_copies[-1] is True
    assert query(postgres_warehouse, f"SELECT source_key, summary FROM {TABLES.output_table} ORDER BY 1") == [
        ("a", "one"),
        ("b", "two"),
    ]
    assert query(postgres_warehouse, f"SELECT source_key FROM {TABLES.pending_table}") == []


def test_a_load_whose_keys_are_partly_in_the_table_updates_those_and_inserts_the_rest(
    pg_warehouse, postgres_warehouse, straight_copies
):
    load(pg_warehouse, [SummaryRow("a", "old", 1, 1, "end_turn")], run_id="run-0")
    pg_warehouse.carry_over(["b"], run_id="run-0", prompt_version=PROMPT)

    load(
        pg_warehouse,
        [SummaryRow("b", "new b", 2, 2, "end_turn"), SummaryRow("a", "new a", 2, 2, "max_tokens")],
    )

    assert straight_copies[-1] is False

    assert query(
        postgres_warehouse,
        f"SELECT source_key, summary, stop_reason, run_id FROM {TABLES.output_table} ORDER BY 1",
    ) == [("a", "new a", "max_tokens", "run-1"), ("b", "new b", "end_turn", "run-1")]
    assert query(postgres_warehouse, f"SELECT source_key FROM {TABLES.pending_table}") == []


def test_a_copy_refused_for_another_reason_fails_the_load_and_writes_nothing(
    pg_warehouse, postgres_warehouse
):
    with pytest.raises(Exception, match=r"null value|not-null"):
        load(pg_warehouse, [SummaryRow("a", "fine", 1, 1, "end_turn"), SummaryRow(None, "no key", 1, 1, "x")])

    assert query(postgres_warehouse, f"SELECT COUNT(*) FROM {TABLES.output_table}") == [(0,)]


def test_a_load_in_batches_of_a_few_rows_loads_every_row_and_the_last_of_a_key_wins(
    pg_warehouse, postgres_warehouse, straight_copies, monkeypatch
):
    monkeypatch.setattr("bedrock_batch.warehouse._WRITE_STEP", 3)
    monkeypatch.setattr("bedrock_batch.warehouse._WRITE_BATCH", 6)
    rows = [SummaryRow(f"k{i:03d}", f"first {i}", 1, 1, "end_turn") for i in range(40)]
    rows.append(SummaryRow("k000", "second 0", 1, 1, "end_turn"))

    load(pg_warehouse, rows)

    assert len(straight_copies) >= 7  # 41 rows in batches of at most 6
    assert query(postgres_warehouse, f"SELECT COUNT(*) FROM {TABLES.output_table}") == [(40,)]
    assert query(
        postgres_warehouse, f"SELECT summary FROM {TABLES.output_table} WHERE source_key = 'k000'"
    ) == [("second 0",)]
