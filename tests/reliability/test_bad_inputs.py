"""Bad inputs: source rows the pipeline must reject, configs it must refuse, outputs it cannot read.

Each bad input ends named (a code, a field, a file and line), never silently dropped, and every row
of the day stays accounted for.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
import yaml

from bedrock_batch.config import load_pipeline
from bedrock_batch.errors import ConfigError
from bedrock_batch.prepare import RuntimeSettings
from bedrock_batch.s3paths import split_s3_uri
from tests.fixtures.pipeline_run import SHIPPED_CONFIG
from tests.reliability.support import LibraryRun, assert_conserved, write_config

DAY = dt.date(2026, 10, 21)
STARTED_AT = "2026-10-21 09:30:00"
GOOD_TEXT = "Customer: My invoice is wrong. Agent: I have corrected the invoice and sent it again."

# (key, text, expected rejection code); keys are what the error table stores them under.
BAD_ROWS: list[tuple[Any, Any, str]] = [
    (None, GOOD_TEXT, "null_key"),
    ("   ", GOOD_TEXT, "null_key"),
    ("dup-1", GOOD_TEXT, "duplicate_key"),  # the second of two rows with this key
    ("empty-1", "", "empty_text"),
    ("blank-1", " \n\t ", "empty_text"),
    ("nulltext-1", None, "empty_text"),
    ("utf8-1", b"caf\xe9 au lait", "invalid_utf8"),
    ("ctrl-1", "hello\x00world\x07", "control_characters"),
    ("long-1", "word " * 200_000, "too_long"),
]
# A record-id collision (rejected as duplicate_key) needs two keys whose 64-bit blake2b digests
# collide: not reproducible with real data, so the record builder's unit tests cover it.


@pytest.fixture
def library_run(aws_env, local_aws_clean, sqlite_warehouse):
    def make(**kwargs: Any) -> LibraryRun:
        kwargs.setdefault("run_id", f"scheduled__{uuid.uuid4().hex[:10]}")
        return LibraryRun(local_aws_clean, sqlite_warehouse, kwargs.pop("day", DAY), **kwargs)

    return make


def _source_table_without_a_key_constraint(warehouse, rows: list[tuple[Any, Any]]) -> None:
    """A source table that lets NULL and duplicate keys through, as real sources do."""
    conn = warehouse.connect()
    try:
        conn.execute(
            "CREATE TABLE call_transcripts (call_id TEXT, started_at TIMESTAMP, agent_id TEXT, "
            "customer_id TEXT, transcript TEXT)"
        )
        conn.executemany(
            "INSERT INTO call_transcripts VALUES (?, ?, 'agent-1', 'customer-1', ?)",
            [(key, STARTED_AT, text) for key, text in rows],
        )
        conn.commit()
    finally:
        conn.close()


# -- bad source rows ----------------------------------------------------------------------------
def test_every_bad_row_kind_is_rejected_with_its_code_and_accounted_for(library_run, sqlite_warehouse):
    good = [(f"good-{i}", GOOD_TEXT) for i in range(5)]
    _source_table_without_a_key_constraint(
        sqlite_warehouse, [*good, ("dup-1", GOOD_TEXT), *[(key, text) for key, text, _ in BAD_ROWS]]
    )
    run = library_run()
    plan = run.prepare(seed_count=0)
    run.seeded = len(good) + 1 + len(BAD_ROWS)
    expected: dict[str, int] = {}
    for _, _, code in BAD_ROWS:
        expected[code] = expected.get(code, 0) + 1
    assert plan["rejected_by_code"] == expected
    stored = dict(
        run.as_pipeline_run.query(
            "SELECT code, COUNT(*) FROM call_summary_errors WHERE message <> '' GROUP BY code"
        )
    )
    assert stored == expected
    for key, _, code in BAD_ROWS:
        if key is not None and key.strip() and key != "dup-1":
            found = run.as_pipeline_run.query(
                "SELECT code FROM call_summary_errors WHERE source_key = ?", (key,)
            )
            assert found == [(code,)], key
    counts = run.account()
    # Rows with a NULL key cannot be joined back to the source; every other row is accounted for.
    assert counts["unaccounted"] == 1
    assert counts["duplicated"] == 0
    # Under the batch minimum: carried over, including the valid first row of the duplicated key.
    assert counts["pending"] == len(good) + 2


def test_a_blank_row_before_the_transcript_of_the_same_key_does_not_cost_the_transcript(
    library_run, sqlite_warehouse
):
    _source_table_without_a_key_constraint(sqlite_warehouse, [("twice-1", ""), ("twice-1", GOOD_TEXT)])
    run = library_run()
    plan = run.prepare(seed_count=0)
    # Both rows have one timestamp, so either may be read first: the other is the one rejected.
    assert plan["rejected_by_code"] in ({"empty_text": 1}, {"duplicate_key": 1})
    queued = run.as_pipeline_run.query("SELECT source_key FROM call_summary_pending")
    assert queued == [("twice-1",)]  # the transcript goes on (carried over: under the batch minimum)


def test_rejected_row_text_never_reaches_the_error_messages(library_run, sqlite_warehouse):
    _source_table_without_a_key_constraint(sqlite_warehouse, [("ctrl-2", "secret words\x07 here")])
    run = library_run()
    run.prepare(seed_count=0)
    messages = run.as_pipeline_run.query("SELECT message FROM call_summary_errors")
    assert messages
    assert all("secret" not in message for (message,) in messages)


# -- bad pipeline configs -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"model.id": "acme.mystery-model-v1:0"}, "model.id"),
        ({"aws.role_arn": "arn:aws:iam::12345:user/not-a-role"}, "aws.role_arn"),
        ({"staging.input_bucket": "Not_A_Bucket"}, "staging.input_bucket"),
        ({"staging.output_bucket": "x"}, "staging.output_bucket"),
        ({"staging.kms_key_id": "my-key"}, "staging.kms_key_id"),
        ({"staging.expected_bucket_owner": "1234"}, "staging.expected_bucket_owner"),
        ({"source.table": "call transcripts; drop"}, "source.table"),
        ({"jobs.timeout_hours": 2}, "jobs.timeout_hours"),
        ({"small_batch.policy": "hope"}, "small_batch.policy"),
    ],
)
def test_a_config_mistake_fails_at_parse_time_naming_the_field(tmp_path, changes, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_pipeline(write_config(tmp_path, changes))


def test_a_template_naming_an_unknown_column_fails_at_parse_time_naming_it(tmp_path):
    prompt = tmp_path / "bad_prompt.yaml"
    prompt.write_text(
        yaml.safe_dump({"version": "v1", "user": "Summarize {{ transcript }} for {{ region }}"})
    )
    with pytest.raises(ConfigError, match=r"prompt: .*\{\{ region \}\}"):
        load_pipeline(write_config(tmp_path, {"prompt": str(prompt)}))


def test_a_rendered_environment_value_is_checked_naming_the_setting():
    settings = RuntimeSettings(role_arn="not-an-arn", input_bucket="ok-bucket", output_bucket="ok-bucket")
    with pytest.raises(ConfigError, match=r"aws\.role_arn"):
        settings.check("summarize_calls")


def test_a_missing_source_table_fails_prepare_naming_the_table(library_run, tmp_path):
    run = library_run(config_path=write_config(tmp_path, {"source.table": "call_transcripts_gone"}))
    # The database's own error (sqlite3.OperationalError here, UndefinedTable on Postgres) names it.
    with pytest.raises(Exception, match="call_transcripts_gone"):
        run.prepare(seed_count=0)


def test_the_shipped_config_is_valid():
    assert load_pipeline(SHIPPED_CONFIG).name == "summarize_calls"


# -- outputs that cannot be read ----------------------------------------------------------------
def _output_key(run: LibraryRun, job: dict, job_arn: str) -> tuple[str, str]:
    s3 = run.local_aws.client("s3")
    bucket, prefix = split_s3_uri(job["output_s3_uri"])
    prefix = f"{prefix.rstrip('/')}/{job_arn.rsplit('/', 1)[-1]}/"
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return bucket, next(key for key in keys if key.endswith(".jsonl.out"))


def test_damaged_and_missing_output_lines_are_reported_and_their_records_carried_over(library_run):
    run = library_run()
    plan = run.prepare()
    job = plan["jobs"][0]
    info = run.wait(run.submit(job)["job_arn"])
    assert info["status"] == "Completed"
    s3 = run.local_aws.client("s3")
    bucket, key = _output_key(run, job, info["jobArn"])
    lines = s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()
    damaged = [
        b"\x00\xffnot json at all",  # garbled: replaces the first record's line
        *lines[1:-2],  # the second-to-last record's line is missing
        lines[-1][: len(lines[-1]) // 2],  # truncated: the write stopped mid-line
    ]
    s3.put_object(Bucket=bucket, Key=key, Body=b"\n".join(damaged))

    outcome = run.collect(job, info)

    assert outcome.quarantined == 2
    assert len(outcome.quarantine_samples) == 2
    assert all(key.rsplit("/", 1)[-1] in sample for sample in outcome.quarantine_samples)
    assert outcome.manifest_problem  # the manifest counts one record more than the output holds
    assert outcome.not_processed == 3
    assert outcome.summarized == job["records"] - 3
    carried = run.account_query(
        "SELECT COUNT(*) FROM call_summary_pending p JOIN call_summary_errors e "
        "ON e.source_key = p.source_key WHERE p.reason = 'retry' AND e.stage = 'batch_job'"
    )
    assert carried == 3
    assert_conserved(run.account(), run.seeded)
