"""Specification of the warehouse: schema, reading the run's rows, loading, the retry queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from bedrock_batch.warehouse import ErrorRow, SourceSpec, SummaryRow, Warehouse, WarehouseTables

from .conftest import MODEL, PROMPT, SOURCE, TABLES, execute, insert_calls, query

DAY = datetime(2026, 11, 20, tzinfo=UTC)
NEXT_DAY = DAY + timedelta(days=1)


def read(wh: Warehouse, *, run_id: str | None = "run-2", max_attempts: int = 3, **kwargs) -> list[dict]:
    kwargs.setdefault("start", DAY)
    kwargs.setdefault("end", NEXT_DAY)
    return list(
        wh.iter_source_rows(SOURCE, prompt_version=PROMPT, max_attempts=max_attempts, run_id=run_id, **kwargs)
    )


def keys(rows: list[dict]) -> list[str]:
    return [row["source_key"] for row in rows]


def summary(key: str, text: str = "ok") -> SummaryRow:
    return SummaryRow(key, text, 100, 20, "end_turn")


def model_error(key: str, attempt: int) -> ErrorRow:
    """A retryable error of a try that reached the model (a 429 would spend no attempt)."""
    return ErrorRow(key, "model", "500", "internal error", retryable=True, attempt=attempt)


def load(wh: Warehouse, results=(), errors=(), *, run_id: str = "run-1", max_attempts: int = 3) -> dict:
    return wh.load_job(
        results,
        errors,
        run_id=run_id,
        job_arn=f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/{run_id}",
        prompt_version=PROMPT,
        model_id=MODEL,
        max_attempts=max_attempts,
    )


def all_rows(db) -> dict[str, list[tuple]]:
    return {
        "summaries": query(db, f"SELECT * FROM {TABLES.output_table} ORDER BY source_key"),
        "errors": query(db, f"SELECT * FROM {TABLES.error_table} ORDER BY source_key, run_id, stage"),
        "pending": query(db, f"SELECT * FROM {TABLES.pending_table} ORDER BY source_key"),
    }


def without_timestamps(rows: dict[str, list[tuple]]) -> dict[str, list[tuple]]:
    """Drop the last column (loaded_at / recorded_at) and pending's first_seen_at for comparisons."""
    return {
        "summaries": [row[:-1] for row in rows["summaries"]],
        "errors": [row[:-1] for row in rows["errors"]],
        "pending": [row[:3] + row[4:] for row in rows["pending"]],
    }


# -- schema --------------------------------------------------------------------------------------------


def test_ensure_schema_applies_each_version_once(warehouse_db):
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls")

    assert wh.ensure_schema() == [1, 2, 3, 4]
    assert wh.ensure_schema() == []
    assert query(
        warehouse_db, "SELECT pipeline, version FROM bedrock_batch_schema_migrations ORDER BY version"
    ) == [(wh.tables_key, version) for version in (1, 2, 3, 4)]
    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.output_table}") == [(0,)]


def test_tables_renamed_in_a_pipelines_config_are_created_on_its_next_run(warehouse_db):
    Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls").ensure_schema()
    renamed = WarehouseTables("call_summaries_v2", "call_summary_errors_v2", "call_summary_pending_v2")

    assert Warehouse(warehouse_db.conn_id, renamed, pipeline="summarize_calls").ensure_schema() == [
        1,
        2,
        3,
        4,
    ]
    assert query(warehouse_db, "SELECT COUNT(*) FROM call_summary_pending_v2") == [(0,)]


def test_a_second_pipeline_on_the_same_tables_applies_nothing_again(warehouse_db):
    Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls").ensure_schema()

    assert Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls_v2").ensure_schema() == []


def test_versions_recorded_under_the_pipelines_name_are_kept_for_its_existing_tables(warehouse_db):
    """A warehouse migrated before versions were keyed by the tables: nothing is applied twice."""
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls")
    wh.ensure_schema()
    execute(
        warehouse_db,
        [
            "UPDATE bedrock_batch_schema_migrations SET pipeline = 'summarize_calls'"
            f" WHERE pipeline = '{wh.tables_key}'"
        ],
    )

    assert wh.applied_versions() == {1, 2, 3, 4}
    assert wh.ensure_schema() == []
    assert Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls_v2").ensure_schema() == []


def test_ensure_schema_creates_each_pipelines_own_tables(warehouse_db):
    Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls").ensure_schema()
    other = WarehouseTables("ticket_summaries", "ticket_summary_errors", "ticket_summary_pending")

    assert Warehouse(warehouse_db.conn_id, other, pipeline="summarize_tickets").ensure_schema() == [
        1,
        2,
        3,
        4,
    ]
    assert query(warehouse_db, "SELECT COUNT(*) FROM ticket_summary_pending") == [(0,)]


# -- reading -------------------------------------------------------------------------------------------


def test_window_includes_its_start_and_excludes_its_end(warehouse, warehouse_db):
    insert_calls(
        warehouse_db,
        [
            ("before", DAY - timedelta(seconds=1), "t"),
            ("at-start", DAY, "t"),
            ("inside", DAY + timedelta(hours=12), "t"),
            ("last-second", NEXT_DAY - timedelta(seconds=1), "t"),
            ("at-end", NEXT_DAY, "t"),
        ],
    )

    assert keys(read(warehouse)) == ["at-start", "inside", "last-second"]


def test_window_bounds_may_carry_any_timezone(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY + timedelta(hours=1), "t"), ("b", DAY + timedelta(hours=3), "t")])
    plus_two = timezone(timedelta(hours=2))

    rows = read(
        warehouse, start=DAY.astimezone(plus_two), end=(DAY + timedelta(hours=2)).astimezone(plus_two)
    )

    assert keys(rows) == ["a"]


def test_rows_are_read_in_chunks_in_time_order(warehouse, warehouse_db):
    insert_calls(
        warehouse_db, [(f"k{i:02d}", DAY + timedelta(minutes=60 - i), f"text {i}") for i in range(7)]
    )

    rows = read(warehouse, chunk_size=2)

    assert keys(rows) == [f"k{i:02d}" for i in reversed(range(7))]
    assert rows[0] == {
        "source_key": "k06",
        "text": "text 6",
        "attempt": 1,
        "origin": "window",
        "pending_since": None,
        "agent_id": "agent-001",
        "customer_id": "cust-00001",
    }


def test_limit_caps_the_rows_read(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(f"k{i}", DAY + timedelta(minutes=i), "t") for i in range(5)])

    assert keys(read(warehouse, limit=2, chunk_size=1)) == ["k0", "k1"]


def test_rows_summarized_for_the_prompt_version_are_skipped(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("done", DAY, "t"), ("todo", DAY + timedelta(hours=1), "t")])
    load(warehouse, [summary("done")])

    assert keys(read(warehouse)) == ["todo"]
    other_version = list(
        warehouse.iter_source_rows(SOURCE, start=DAY, end=NEXT_DAY, prompt_version="v2", max_attempts=3)
    )
    assert keys(other_version) == ["done", "todo"]


def test_pending_rows_come_first_whatever_their_timestamp(warehouse, warehouse_db):
    insert_calls(
        warehouse_db, [("old", DAY - timedelta(days=5), "t"), ("today", DAY + timedelta(hours=1), "t")]
    )
    warehouse.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)

    rows = read(warehouse)

    assert [(row["source_key"], row["origin"]) for row in rows] == [
        ("old", "carried_over"),
        ("today", "window"),
    ]
    assert rows[0]["pending_since"] is not None


def test_a_key_both_pending_and_in_the_window_comes_once(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(f"k{i}", DAY + timedelta(minutes=i), "t") for i in range(3)])
    warehouse.carry_over(["k1"], run_id="run-1", prompt_version=PROMPT)

    rows = read(warehouse, chunk_size=1)

    assert sorted(keys(rows)) == ["k0", "k1", "k2"]
    assert next(row["origin"] for row in rows if row["source_key"] == "k1") == "carried_over"


def test_pending_rows_are_paged_by_chunk_size(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(f"p{i}", DAY - timedelta(days=2), "t") for i in range(5)])
    warehouse.carry_over([f"p{i}" for i in range(5)], run_id="run-1", prompt_version=PROMPT)

    assert keys(read(warehouse, chunk_size=2)) == [f"p{i}" for i in range(5)]


def test_pending_key_gone_from_the_source_comes_without_text(warehouse, warehouse_db):
    warehouse.carry_over(["vanished"], run_id="run-1", prompt_version=PROMPT)

    (row,) = read(warehouse)

    assert (row["source_key"], row["text"], row["agent_id"]) == ("vanished", None, None)


def test_null_source_key_comes_as_none(warehouse, warehouse_db):
    if warehouse_db.dialect == "postgres":
        execute(
            warehouse_db,
            [
                "ALTER TABLE call_transcripts DROP CONSTRAINT call_transcripts_pkey",
                "ALTER TABLE call_transcripts ALTER COLUMN call_id DROP NOT NULL",
            ],
        )
    insert_calls(warehouse_db, [(None, DAY, "t")])

    assert keys(read(warehouse)) == [None]


def test_include_summarized_reads_summarized_rows_again(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("done", DAY, "t"), ("todo", DAY + timedelta(hours=1), "t")])
    load(warehouse, [summary("done")])

    assert keys(read(warehouse, include_summarized=True)) == ["done", "todo"]


@pytest.mark.parametrize("kwargs", [{}, {"limit": 2}, {"include_summarized": True}, {"max_attempts": 1}])
def test_count_source_rows_matches_the_rows_read(warehouse, warehouse_db, kwargs):
    insert_calls(warehouse_db, [(f"k{i}", DAY + timedelta(minutes=i), "t") for i in range(4)])
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=3), "t")])
    load(warehouse, [summary("k0")], [model_error("k1", 1), model_error("old", 1)], run_id="run-1")
    warehouse.carry_over(["gone"], run_id="run-1", prompt_version=PROMPT)
    args = {"max_attempts": 3, **kwargs}

    rows = read(warehouse, **args)
    count = warehouse.count_source_rows(
        SOURCE, start=DAY, end=NEXT_DAY, prompt_version=PROMPT, run_id="run-2", **args
    )

    assert count == len(rows) > 0


def test_integer_keys_are_read_and_matched_as_text(warehouse, warehouse_db):
    execute(
        warehouse_db,
        [
            "CREATE TABLE tickets (id INTEGER PRIMARY KEY, created_at TIMESTAMP, body TEXT)",
            "INSERT INTO tickets VALUES (7, '2026-11-20 01:00:00', 'seven')",
            "INSERT INTO tickets VALUES (8, '2026-11-20 02:00:00', 'eight')",
            "INSERT INTO tickets VALUES (9, '2026-11-10 02:00:00', 'nine')",
        ],
    )
    tickets = SourceSpec("tickets", "id", "body", "created_at")
    load(warehouse, [summary("7")])
    warehouse.carry_over(["9"], run_id="run-1", prompt_version=PROMPT)

    rows = list(
        warehouse.iter_source_rows(tickets, start=DAY, end=NEXT_DAY, prompt_version=PROMPT, max_attempts=3)
    )

    assert [(row["source_key"], row["text"]) for row in rows] == [("9", "nine"), ("8", "eight")]


# -- loading -------------------------------------------------------------------------------------------


def test_load_job_twice_gives_the_same_rows(warehouse, warehouse_db):
    results = [summary("a", "first"), summary("b", "second")]
    errors = [model_error("c", 1), ErrorRow("d", "model", "400", "bad input", retryable=False, attempt=1)]

    first = load(warehouse, results, errors)
    before = without_timestamps(all_rows(warehouse_db))
    second = load(warehouse, results, errors)

    assert first == second == {"summarized": 2, "errored": 2, "retry": 1, "dead_lettered": 0}
    assert without_timestamps(all_rows(warehouse_db)) == before
    assert len(before["summaries"]) == 2 and len(before["errors"]) == 2 and len(before["pending"]) == 1


def test_load_job_streams_iterables_larger_than_a_batch(warehouse, warehouse_db, monkeypatch):
    monkeypatch.setattr("bedrock_batch.warehouse._WRITE_BATCH", 100)
    results = (summary(f"k{i:05d}") for i in range(250))
    errors = (model_error(f"e{i:05d}", 1) for i in range(250))

    counts = load(warehouse, results, errors)

    assert (counts["summarized"], counts["retry"]) == (250, 250)
    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.output_table}") == [(250,)]
    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(250,)]


def test_a_failing_load_writes_nothing(warehouse, warehouse_db):
    warehouse.carry_over(["a"], run_id="run-1", prompt_version=PROMPT)
    before = all_rows(warehouse_db)
    broken = [summary("a"), SummaryRow(None, "no key", 1, 1, None)]  # type: ignore[arg-type]

    with pytest.raises(Exception, match=r"(?i)not.null"):  # each driver has its own IntegrityError
        load(warehouse, broken, [model_error("b", 1)], run_id="run-2")

    assert all_rows(warehouse_db) == before


def test_the_last_row_of_a_key_wins_within_one_load(warehouse, warehouse_db):
    load(warehouse, [summary("a", "old"), summary("a", "new")])

    assert query(warehouse_db, f"SELECT summary FROM {TABLES.output_table}") == [("new",)]


def test_summaries_keep_tabs_newlines_backslashes_and_unicode(warehouse, warehouse_db):
    text = "line 1\n\tline 2 \\N not null\r\n谢谢 🙂 café"

    load(warehouse, [SummaryRow("a", text, None, None, None)])

    assert query(warehouse_db, f"SELECT summary, input_tokens FROM {TABLES.output_table}") == [(text, None)]


def test_a_later_run_overwrites_the_summary_of_a_key(warehouse, warehouse_db):
    load(warehouse, [summary("a", "old")], run_id="run-1")
    load(warehouse, [summary("a", "new")], run_id="run-2")

    assert query(warehouse_db, f"SELECT summary, run_id FROM {TABLES.output_table}") == [("new", "run-2")]


# -- retries, pending queue, dead letters --------------------------------------------------------------


def test_retryable_error_queues_the_key_for_the_next_run_with_the_next_attempt(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY - timedelta(days=1), "t")])
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1")

    (row,) = read(warehouse, run_id="run-2")

    assert (row["source_key"], row["origin"], row["attempt"]) == ("a", "retry", 2)
    assert query(warehouse_db, f"SELECT reason, attempts, last_run_id FROM {TABLES.pending_table}") == [
        ("retry", 1, "run-1")
    ]


def test_a_rerun_of_the_same_run_sees_the_same_attempt(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY, "t")])
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1")

    (row,) = read(warehouse, run_id="run-1")

    assert row["attempt"] == 1


def test_a_summary_takes_the_key_off_the_queue(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY, "t")])
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1")

    load(warehouse, [summary("a")], run_id="run-2")

    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]
    assert read(warehouse, run_id="run-3") == []


def test_a_load_takes_only_the_keys_it_summarized_off_the_queue(warehouse, warehouse_db):
    warehouse.carry_over(["a", "b", "c"], run_id="run-1", prompt_version=PROMPT)

    load(warehouse, [summary("a")], [model_error("c", 1)], run_id="run-2")

    assert query(
        warehouse_db, f"SELECT source_key, reason FROM {TABLES.pending_table} ORDER BY source_key"
    ) == [("b", "carried_over"), ("c", "retry")]


def test_a_reloaded_summary_takes_its_key_off_the_queue_again(warehouse, warehouse_db):
    load(warehouse, [summary("a", "first")], run_id="run-1")
    warehouse.carry_over(["a"], run_id="run-2", prompt_version=PROMPT)

    load(warehouse, [summary("a", "again")], run_id="run-1")

    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]
    assert query(warehouse_db, f"SELECT summary FROM {TABLES.output_table}") == [("again",)]


def test_a_load_leaves_queued_a_key_summarized_by_an_earlier_load_of_the_same_run(warehouse, warehouse_db):
    load(warehouse, [summary("a")], run_id="run-1")
    warehouse.carry_over(["a"], run_id="run-2", prompt_version=PROMPT)

    load(warehouse, [summary("b")], run_id="run-1")
    load(warehouse, [summary("c")], run_id="run-3")

    assert query(warehouse_db, f"SELECT source_key FROM {TABLES.pending_table}") == [("a",)]


@pytest.mark.parametrize("queued", [1, 5], ids=["queue shorter than the load", "load shorter"])
def test_the_keys_a_load_summarized_leave_the_queue_whichever_is_shorter(warehouse, warehouse_db, queued):
    keys = [f"k{i}" for i in range(5)]
    warehouse.carry_over(keys[:queued], run_id="run-0", prompt_version=PROMPT)
    warehouse.carry_over(["other"], run_id="run-0", prompt_version=PROMPT)

    load(warehouse, [summary(key) for key in keys[:3]], run_id="run-1")

    assert query(warehouse_db, f"SELECT source_key FROM {TABLES.pending_table} ORDER BY 1") == [
        (key,) for key in [*keys[3:queued], "other"]
    ]


def test_a_summary_leaves_the_keys_queued_under_another_prompt_version(warehouse, warehouse_db):
    warehouse.carry_over(["a"], run_id="run-1", prompt_version="v0")
    warehouse.carry_over(["a"], run_id="run-1", prompt_version=PROMPT)

    load(warehouse, [summary("a")], run_id="run-2")

    assert query(warehouse_db, f"SELECT prompt_version FROM {TABLES.pending_table}") == [("v0",)]


def test_a_key_failing_at_max_attempts_is_dead_lettered_and_never_read_again(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY, "t")])
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1", max_attempts=2)
    (row,) = read(warehouse, run_id="run-2", max_attempts=2)

    counts = load(warehouse, errors=[model_error("a", row["attempt"])], run_id="run-2", max_attempts=2)

    assert counts["dead_lettered"] == 1
    assert query(
        warehouse_db, f"SELECT run_id, attempt, dead_lettered FROM {TABLES.error_table} ORDER BY run_id"
    ) == [("run-1", 1, False), ("run-2", 2, True)]
    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]
    assert read(warehouse, run_id="run-3", max_attempts=2) == []


def test_keys_tried_max_attempts_times_are_not_read(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY, "t")])
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1")
    load(warehouse, errors=[model_error("a", 2)], run_id="run-2")

    assert read(warehouse, run_id="run-3", max_attempts=2) == []
    assert [row["attempt"] for row in read(warehouse, run_id="run-3", max_attempts=3)] == [3]


def test_a_non_retryable_error_leaves_the_queue_without_dead_letter(warehouse, warehouse_db):
    warehouse.carry_over(["a"], run_id="run-1", prompt_version=PROMPT)

    load(warehouse, errors=[ErrorRow("a", "model", "400", "bad", retryable=False, attempt=1)], run_id="run-2")

    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]
    assert query(warehouse_db, f"SELECT retryable, dead_lettered FROM {TABLES.error_table}") == [
        (False, False)
    ]


def test_rejections_are_recorded_once_and_taken_off_the_queue(warehouse, warehouse_db):
    warehouse.carry_over(["a"], run_id="run-1", prompt_version=PROMPT)
    rejections = [
        ErrorRow("a", "validate", "empty_text", "transcript is empty", retryable=True, attempt=1),
        ErrorRow(None, "validate", "null_key", "no key", retryable=False, attempt=1),  # type: ignore[arg-type]
    ]

    assert warehouse.record_rejections(rejections, run_id="run-2", prompt_version=PROMPT) == 1
    assert warehouse.record_rejections(rejections, run_id="run-2", prompt_version=PROMPT) == 1

    assert query(warehouse_db, f"SELECT source_key, code, retryable FROM {TABLES.error_table}") == [
        ("a", "empty_text", False)
    ]
    assert query(warehouse_db, f"SELECT COUNT(*) FROM {TABLES.pending_table}") == [(0,)]


def test_carry_over_keeps_an_existing_retry_and_its_attempts(warehouse, warehouse_db):
    load(warehouse, errors=[model_error("a", 1)], run_id="run-1")

    warehouse.carry_over(["a", "b"], run_id="run-2", prompt_version=PROMPT)

    assert query(
        warehouse_db,
        f"SELECT source_key, reason, attempts, last_run_id FROM {TABLES.pending_table} ORDER BY 1",
    ) == [("a", "retry", 1, "run-2"), ("b", "carried_over", 0, "run-2")]
    assert warehouse.pending_counts() == {"carried_over": 1, "retry": 1}


def test_carry_over_refuses_an_unknown_reason(warehouse):
    with pytest.raises(ValueError, match="pending reason"):
        warehouse.carry_over(["a"], run_id="run-1", prompt_version=PROMPT, reason="later")  # type: ignore[arg-type]


# -- reporting -----------------------------------------------------------------------------------------


def test_run_counts_report_the_runs_outcome(warehouse):
    load(
        warehouse,
        [summary("a"), summary("b")],
        [
            model_error("c", 1),
            model_error("d", 3),
            ErrorRow("e", "model", "400", "bad", retryable=False, attempt=1),
        ],
        run_id="run-1",
    )
    warehouse.carry_over(["f"], run_id="run-1", prompt_version=PROMPT)

    assert warehouse.run_counts("run-1", PROMPT) == {
        "summarized": 2,
        "errored": 3,
        "dead_lettered": 1,
        "pending": 2,
        "pending_retry": 1,
        "pending_carried_over": 1,
        "input_tokens": 200,
        "output_tokens": 40,
    }


def test_results_of_run_are_the_rows_that_run_loaded_for_the_keys_asked(warehouse):
    load(warehouse, [summary("a")], [model_error("b", 1), model_error("c", 3)], run_id="run-1")
    load(warehouse, [summary("elsewhere")], [model_error("d", 1)], run_id="run-2")
    warehouse.carry_over(["e"], run_id="run-1", prompt_version=PROMPT)

    asked = ["a", "b", "c", "d", "e", "unknown"]
    found = warehouse.results_of_run(asked, run_id="run-1", prompt_version=PROMPT)

    assert found.summaries == {"a": (100, 20)}
    assert found.errors == {"b": (True, False), "c": (True, True)}  # c was dead-lettered at attempt 3
    assert "d" not in found and "e" not in found and len(found) == 3
    assert not warehouse.results_of_run(["a"], run_id="run-1", prompt_version="v2")


def pending_claims(db) -> dict[str, str | None]:
    return dict(query(db, f"SELECT source_key, claimed_by FROM {TABLES.pending_table}"))


def test_keys_to_call_skip_what_the_run_loaded_and_what_another_run_holds_or_loaded_since(
    warehouse, warehouse_db
):
    load(warehouse, [summary("summarized-before")], run_id="run-3")  # e.g. a re-summarize reads it again
    execute(warehouse_db, [f"UPDATE {TABLES.output_table} SET loaded_at = '2020-01-01 00:00:00'"])
    read_at = datetime.now(UTC) - timedelta(seconds=1)
    load(warehouse, [summary("loaded")], [model_error("failed", 1)], run_id="run-1")  # failed: queued retry
    unreadable = ErrorRow(
        "errored-later", "output", "output_unreadable", "no text", retryable=False, attempt=1
    )
    load(warehouse, [summary("summarized-later")], [unreadable], run_id="run-2")
    warehouse.carry_over(["held", "free"], run_id="run-1", prompt_version=PROMPT)
    warehouse.claim_pending(run_id="run-2", prompt_version=PROMPT)  # run 2 holds held, free and failed
    execute(
        warehouse_db,
        [f"UPDATE {TABLES.pending_table} SET claimed_by = 'run-1' WHERE source_key IN ('free', 'failed')"],
    )

    asked = ["loaded", "failed", "summarized-later", "errored-later", "summarized-before", "held", "free"]
    earlier, elsewhere = warehouse.take_keys_to_call(
        asked, run_id="run-1", prompt_version=PROMPT, read_since=read_at
    )

    assert set(earlier.summaries) == {"loaded"} and set(earlier.errors) == {"failed"}
    assert elsewhere == {"summarized-later", "errored-later", "held"}
    # The run lets go of the key it will not call again (queued to retry: the next run takes it).
    assert pending_claims(warehouse_db) == {"failed": None, "held": "run-2", "free": "run-1"}


def test_let_go_releases_only_the_runs_own_claims(warehouse, warehouse_db):
    warehouse.carry_over(["ours", "theirs"], run_id="run-1", prompt_version=PROMPT)
    execute(
        warehouse_db,
        [
            f"UPDATE {TABLES.pending_table} SET claimed_by = 'run-1', claimed_at = '2026-11-20 00:00:00'"
            " WHERE source_key = 'ours'",
            f"UPDATE {TABLES.pending_table} SET claimed_by = 'run-2', claimed_at = '2026-11-20 00:00:00'"
            " WHERE source_key = 'theirs'",
        ],
    )

    warehouse.let_go(["ours", "theirs"], run_id="run-1", prompt_version=PROMPT)

    assert pending_claims(warehouse_db) == {"ours": None, "theirs": "run-2"}


def test_keys_to_call_claim_the_queued_keys_they_will_call(warehouse, warehouse_db):
    warehouse.carry_over(["carried"], run_id="run-1", prompt_version=PROMPT)

    _, elsewhere = warehouse.take_keys_to_call(
        ["carried"], run_id="run-1", prompt_version=PROMPT, read_since=None
    )

    assert elsewhere == set()
    assert pending_claims(warehouse_db) == {"carried": "run-1"}  # no later run takes it meanwhile


def test_sample_summaries_returns_at_most_n(warehouse):
    load(warehouse, [summary(f"k{i}", f"summary {i}") for i in range(4)])

    samples = warehouse.sample_summaries(2, prompt_version=PROMPT)

    assert len(samples) == 2
    assert set(samples[0]) == {
        "source_key",
        "prompt_version",
        "model_id",
        "summary",
        "input_tokens",
        "output_tokens",
        "stop_reason",
    }


def test_a_pending_key_claimed_by_a_run_in_flight_is_not_read_by_another_run(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    warehouse.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)

    assert warehouse.claim_pending(run_id="backfill-a", prompt_version=PROMPT) == 1
    assert warehouse.claim_pending(run_id="nightly-b", prompt_version=PROMPT) == 0

    assert keys(read(warehouse, run_id="backfill-a")) == ["old"]
    assert keys(read(warehouse, run_id="nightly-b")) == []


def test_a_key_queued_after_a_run_claimed_the_queue_is_left_for_the_next_claim(warehouse, warehouse_db):
    insert_calls(
        warehouse_db, [("first", DAY - timedelta(days=5), "t"), ("late", DAY - timedelta(days=4), "t")]
    )
    warehouse.carry_over(["first"], run_id="run-1", prompt_version=PROMPT)
    warehouse.claim_pending(run_id="backfill-a", prompt_version=PROMPT)
    warehouse.carry_over(["late"], run_id="other", prompt_version=PROMPT)  # e.g. another run's collect

    assert keys(read(warehouse, run_id="backfill-a", claimed_only=True)) == ["first"]
    assert (
        warehouse.count_source_rows(
            SOURCE,
            start=DAY,
            end=NEXT_DAY,
            prompt_version=PROMPT,
            max_attempts=3,
            run_id="backfill-a",
            claimed_only=True,
        )
        == 1
    )
    assert warehouse.claim_pending(run_id="nightly-b", prompt_version=PROMPT) == 1
    assert keys(read(warehouse, run_id="nightly-b", claimed_only=True)) == ["late"]


def test_a_limited_claim_takes_the_first_keys_in_key_order_and_leaves_the_rest_to_others(
    warehouse, warehouse_db
):
    insert_calls(warehouse_db, [(f"k{i}", DAY - timedelta(days=5), "t") for i in range(5)])
    warehouse.carry_over([f"k{i}" for i in (3, 0, 4, 1, 2)], run_id="run-1", prompt_version=PROMPT)

    assert warehouse.claim_pending(run_id="limited", prompt_version=PROMPT, limit=2) == 2
    assert warehouse.claim_pending(run_id="other", prompt_version=PROMPT) == 3

    assert keys(read(warehouse, run_id="limited", claimed_only=True)) == ["k0", "k1"]
    assert keys(read(warehouse, run_id="other", claimed_only=True)) == ["k2", "k3", "k4"]


def test_a_limited_claim_skips_the_keys_its_read_would_skip(warehouse, warehouse_db):
    insert_calls(warehouse_db, [(f"k{i}", DAY - timedelta(days=5), "t") for i in range(4)])
    warehouse.carry_over([f"k{i}" for i in range(4)], run_id="run-1", prompt_version=PROMPT)
    load(warehouse, errors=[model_error("k0", 1)], run_id="run-a")  # k0: queued again, tried once
    load(warehouse, errors=[model_error("k0", 2)], run_id="run-b")  # k0: tried twice

    assert warehouse.claim_pending(run_id="limited", prompt_version=PROMPT, limit=2, max_attempts=2) == 2

    assert keys(read(warehouse, run_id="limited", max_attempts=2, claimed_only=True)) == ["k1", "k2"]


def test_a_limited_claim_lets_go_of_what_an_earlier_try_of_the_run_held_past_the_limit(
    warehouse, warehouse_db
):
    insert_calls(warehouse_db, [(f"k{i}", DAY - timedelta(days=5), "t") for i in range(1, 9)])
    warehouse.carry_over([f"k{i}" for i in range(5, 9)], run_id="run-1", prompt_version=PROMPT)
    warehouse.claim_pending(run_id="limited", prompt_version=PROMPT, limit=4)  # first try: k5-k8
    warehouse.carry_over(["k1"], run_id="other", prompt_version=PROMPT)

    warehouse.claim_pending(run_id="limited", prompt_version=PROMPT, limit=4)  # the retry

    assert keys(read(warehouse, run_id="limited", claimed_only=True)) == ["k1", "k5", "k6", "k7"]
    assert warehouse.claim_pending(run_id="next", prompt_version=PROMPT) == 1
    assert keys(read(warehouse, run_id="next", claimed_only=True)) == ["k8"]


def test_a_key_queued_before_max_attempts_was_lowered_is_dead_lettered_naming_both_numbers(
    warehouse, warehouse_db
):
    insert_calls(warehouse_db, [("k0", DAY - timedelta(days=5), "t"), ("k1", DAY - timedelta(days=5), "t")])
    load(warehouse, errors=[model_error("k0", 1), model_error("k1", 1)], run_id="run-a")
    load(warehouse, errors=[model_error("k0", 2)], run_id="run-b")  # k0 tried twice, still queued (max 3)

    assert warehouse.dead_letter_exhausted(run_id="run-c", prompt_version=PROMPT, max_attempts=2) == 1

    assert keys(read(warehouse, run_id="run-c", max_attempts=3)) == ["k1"]
    ((code, dead, message),) = query(
        warehouse_db,
        "SELECT code, dead_lettered, message FROM call_summary_errors WHERE source_key = ? AND run_id = ?",
        ("k0", "run-c"),
    )
    assert (code, bool(dead)) == ("attempts_exhausted", True)
    assert "tried in 2 runs; max_attempts is 2" in message


def test_a_summarized_key_left_queued_is_not_dead_lettered(warehouse, warehouse_db):
    """A re-summarize must still find it: a dead letter would keep it from every read."""
    insert_calls(warehouse_db, [("k0", DAY - timedelta(days=5), "t")])
    load(warehouse, errors=[model_error("k0", 1)], run_id="run-a")
    load(warehouse, errors=[model_error("k0", 2)], run_id="run-b")
    load(warehouse, [summary("k0")], run_id="run-c")  # summarized by a later run
    load(warehouse, errors=[model_error("k0", 2)], run_id="run-b")  # run-b's collect, cleared: queued again

    assert warehouse.dead_letter_exhausted(run_id="run-d", prompt_version=PROMPT, max_attempts=2) == 0


def test_a_stale_claim_is_free_again(warehouse, warehouse_db):
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls", claim_ttl=timedelta(0))
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    wh.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)
    wh.claim_pending(run_id="died", prompt_version=PROMPT)

    assert wh.claim_pending(run_id="next", prompt_version=PROMPT) == 1
    assert keys(read(wh, run_id="next")) == ["old"]


def test_a_stale_claim_of_a_run_still_in_flight_holds(warehouse, warehouse_db):
    """Its job may have waited days for a pool slot or the quota: taking its keys would send them twice."""
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls", claim_ttl=timedelta(0))
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    wh.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)
    wh.claim_pending(run_id="waiting", prompt_version=PROMPT)

    wh.judge_claims(run_id="next", run_is_live=lambda run_id: run_id == "waiting")

    assert wh.claim_pending(run_id="next", prompt_version=PROMPT) == 0
    assert keys(read(wh, run_id="next")) == []
    assert wh.dead_letter_exhausted(run_id="next", prompt_version=PROMPT, max_attempts=0) == 0


@pytest.mark.parametrize("state", [False, None], ids=["over", "unknown"])
def test_a_claim_younger_than_the_ttl_holds_whatever_its_runs_state(warehouse, warehouse_db, state):
    """A run that is over may have a completed job whose output its cleared collect is about to load."""
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    warehouse.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)
    warehouse.claim_pending(run_id="failed", prompt_version=PROMPT)

    warehouse.judge_claims(run_id="next", run_is_live=lambda run_id: state)

    assert warehouse.claim_pending(run_id="next", prompt_version=PROMPT) == 0


def test_keys_queued_under_an_earlier_prompt_version_are_queued_under_the_current_one(
    warehouse, warehouse_db
):
    insert_calls(warehouse_db, [("a", DAY - timedelta(days=5), "t"), ("b", DAY - timedelta(days=4), "t")])
    warehouse.carry_over(["a"], run_id="run-1", prompt_version="v0")
    warehouse.carry_over(["b"], run_id="run-1", prompt_version="v0", reason="retry")

    assert warehouse.requeue_other_prompt_versions(run_id="run-2", prompt_version=PROMPT) == 2

    assert warehouse.claim_pending(run_id="run-2", prompt_version=PROMPT) == 2
    assert keys(read(warehouse, run_id="run-2", claimed_only=True)) == ["a", "b"]
    assert query(warehouse_db, "SELECT DISTINCT prompt_version, reason FROM call_summary_pending") == [
        (PROMPT, "carried_over")
    ]


def test_a_key_already_summarized_under_the_current_prompt_version_leaves_the_earlier_queue(
    warehouse, warehouse_db
):
    insert_calls(warehouse_db, [("a", DAY - timedelta(days=5), "t")])
    warehouse.carry_over(["a"], run_id="run-1", prompt_version="v0")
    load(warehouse, [summary("a")], run_id="backfill")  # its day was run again under the new prompt

    assert warehouse.requeue_other_prompt_versions(run_id="run-2", prompt_version=PROMPT) == 0

    assert query(warehouse_db, "SELECT COUNT(*) FROM call_summary_pending") == [(0,)]


def test_a_stale_claim_of_a_run_in_flight_under_an_earlier_prompt_version_stays_with_it(warehouse_db):
    wh = Warehouse(warehouse_db.conn_id, TABLES, pipeline="summarize_calls", claim_ttl=timedelta(0))
    wh.ensure_schema()
    wh.carry_over(["a"], run_id="run-1", prompt_version="v0")
    wh.claim_pending(run_id="old-prompt-run", prompt_version="v0")  # still waiting for its job

    wh.judge_claims(run_id="run-2", run_is_live=lambda run_id: run_id == "old-prompt-run")

    assert wh.requeue_other_prompt_versions(run_id="run-2", prompt_version=PROMPT) == 0
    assert query(warehouse_db, "SELECT prompt_version, claimed_by FROM call_summary_pending") == [
        ("v0", "old-prompt-run")
    ]


def test_a_key_a_run_in_flight_holds_under_an_earlier_prompt_version_stays_with_it(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("a", DAY - timedelta(days=5), "t")])
    warehouse.carry_over(["a"], run_id="run-1", prompt_version="v0")
    warehouse.claim_pending(run_id="old-prompt-run", prompt_version="v0")

    assert warehouse.requeue_other_prompt_versions(run_id="run-2", prompt_version=PROMPT) == 0

    assert query(warehouse_db, "SELECT prompt_version, claimed_by FROM call_summary_pending") == [
        ("v0", "old-prompt-run")
    ]


def test_an_earlier_runs_collect_run_again_leaves_a_later_runs_claim_alone(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    load(warehouse, errors=[model_error("old", 1)], run_id="run-1")  # queued for retry by run-1
    warehouse.claim_pending(run_id="run-2", prompt_version=PROMPT)  # run-2 works on it

    load(warehouse, errors=[model_error("old", 1)], run_id="run-1")  # run-1's collect, cleared

    assert warehouse.claim_pending(run_id="run-3", prompt_version=PROMPT) == 0
    assert keys(read(warehouse, run_id="run-2", claimed_only=True)) == ["old"]


def test_queuing_a_key_again_releases_its_claim(warehouse, warehouse_db):
    insert_calls(warehouse_db, [("old", DAY - timedelta(days=5), "t")])
    warehouse.carry_over(["old"], run_id="run-1", prompt_version=PROMPT)
    warehouse.claim_pending(run_id="run-2", prompt_version=PROMPT)

    load(warehouse, errors=[model_error("old", 1)], run_id="run-2")

    assert warehouse.claim_pending(run_id="run-3", prompt_version=PROMPT) == 1
