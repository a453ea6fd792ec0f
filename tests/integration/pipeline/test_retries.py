"""Records that keep failing across runs: retried up to max_attempts, then dead-lettered, never lost."""

from __future__ import annotations

import datetime as dt

import pytest

from bedrock_batch.staging import iter_record_map
from tests.integration.pipeline.support import DAY, tiny_quotas

FAIL = {"local-aws:fault": "fail"}


def fail_runs(harness, runs: int) -> list:
    """``runs`` runs on consecutive days whose jobs all fail; returns what each prepare gave."""
    prepared_runs = []
    for n in range(runs):
        prepared = harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=n))
        prepared_runs.append(prepared)
        harness.run_jobs(prepared, tags=FAIL)
    return prepared_runs


def attempts(harness, prepared) -> set[int]:
    return {attempt for job in prepared.jobs for _, _, attempt in iter_record_map(harness.s3, job.map_s3_uri)}


def test_a_record_failing_every_run_is_dead_lettered_after_max_attempts(harness):
    harness.configure(max_attempts=3)
    keys = harness.add_calls(6)
    runs = fail_runs(harness, 3)
    assert [attempts(harness, prepared) for prepared in runs] == [{1}, {2}, {3}]
    assert harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
    dead = harness.query(
        "SELECT source_key, attempt, code FROM call_summary_errors WHERE dead_lettered = ?", (1,)
    )
    assert sorted(dead) == sorted((key, 3, "job_failed") for key in keys)
    # Never retried forever: the next runs read nothing of them, even for their own day.
    assert harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=3)).counts["source_rows"] == 0
    assert harness.prepare(tiny_quotas(), day=DAY).counts["source_rows"] == 0


def test_a_record_that_succeeds_on_a_retry_leaves_the_queue(harness):
    keys = harness.add_calls(6)
    fail_runs(harness, 1)
    retry = harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=1))
    assert retry.counts["by_origin"] == {"retry": 6}
    (outcome,) = harness.run_jobs(retry)
    assert outcome.summarized == 6
    assert harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
    assert sorted(key for (key,) in harness.query("SELECT source_key FROM call_summaries")) == sorted(keys)


@pytest.mark.postgres
def test_dead_letter_after_max_attempts_on_postgres(pg_harness):
    pg_harness.configure(max_attempts=2)
    keys = pg_harness.add_calls(5)
    fail_runs(pg_harness, 2)
    dead = pg_harness.query("SELECT source_key FROM call_summary_errors WHERE dead_lettered")
    assert sorted(key for (key,) in dead) == sorted(keys)
    assert pg_harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
