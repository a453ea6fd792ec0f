"""Records that keep failing across runs: retried up to max_attempts, then dead-lettered, never lost.

Only a try that reached the record counts: a record error does; a job that failed (or expired, or
was stopped) before it reached the record does not, whatever the number of nights.
"""

from __future__ import annotations

import datetime as dt

import pytest

from bedrock_batch.staging import iter_record_map
from tests.integration.pipeline.support import DAY, tiny_quotas

FAIL = {"local-aws:fault": "fail"}
RECORD_ERRORS = {"local-aws:record-error-rate": "1.0"}
"""Every record answered with a retryable model error (500)."""


def failing_runs(harness, runs: int, tags=RECORD_ERRORS) -> list:
    """``runs`` runs on consecutive days whose jobs fail as ``tags`` say; returns each prepare's result."""
    prepared_runs = []
    for n in range(runs):
        prepared = harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=n))
        prepared_runs.append(prepared)
        harness.run_jobs(prepared, tags=tags)
    return prepared_runs


def attempts(harness, prepared) -> set[int]:
    return {attempt for job in prepared.jobs for _, _, attempt in iter_record_map(harness.s3, job.map_s3_uri)}


def test_a_record_failing_every_run_is_dead_lettered_after_max_attempts(harness):
    harness.configure(max_attempts=3)
    keys = harness.add_calls(6)
    runs = failing_runs(harness, 3)
    assert [attempts(harness, prepared) for prepared in runs] == [{1}, {2}, {3}]
    assert harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
    dead = harness.query(
        "SELECT source_key, attempt, code FROM call_summary_errors WHERE dead_lettered = ?", (1,)
    )
    assert sorted(dead) == sorted((key, 3, "500") for key in keys)
    # Never retried forever: the next runs read nothing of them, even for their own day.
    assert harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=3)).counts["source_rows"] == 0
    assert harness.prepare(tiny_quotas(), day=DAY).counts["source_rows"] == 0


def test_records_of_a_job_that_fails_every_night_are_retried_without_spending_attempts(harness):
    harness.configure(max_attempts=2)
    keys = harness.add_calls(6)
    runs = failing_runs(harness, 3, tags=FAIL)
    assert [attempts(harness, prepared) for prepared in runs] == [{1}, {1}, {1}]
    assert harness.query("SELECT COUNT(*) FROM call_summary_errors WHERE dead_lettered = ?", (1,)) == [(0,)]
    pending = harness.query("SELECT source_key, reason, attempts FROM call_summary_pending")
    assert sorted(pending) == sorted((key, "retry", 0) for key in keys)
    codes = harness.query("SELECT DISTINCT code FROM call_summary_errors")
    assert codes == [("job_failed",)]
    # Once the job runs, the records are summarized.
    (outcome,) = harness.run_jobs(harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=3)))
    assert outcome.summarized == 6


def test_records_a_job_answered_with_429_for_are_retried_without_spending_attempts(harness):
    harness.configure(max_attempts=2)
    keys = harness.add_calls(6)
    runs = failing_runs(harness, 3, tags={**RECORD_ERRORS, "local-aws:record-error-code": "429"})
    assert [attempts(harness, prepared) for prepared in runs] == [{1}, {1}, {1}]
    assert harness.query("SELECT COUNT(*) FROM call_summary_errors WHERE dead_lettered = ?", (1,)) == [(0,)]
    pending = harness.query("SELECT source_key, reason, attempts FROM call_summary_pending")
    assert sorted(pending) == sorted((key, "retry", 0) for key in keys)
    assert harness.query("SELECT DISTINCT stage, code FROM call_summary_errors") == [("model", "429")]


def test_a_record_a_job_expired_before_reaching_it_keeps_the_attempt_it_had(harness):
    keys = harness.add_calls(6)
    failing_runs(harness, 1)  # a model error: attempt 1 spent
    retry = harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=1))
    assert attempts(harness, retry) == {2}
    harness.run_jobs(retry, tags={"local-aws:fault": "expire"})
    again = harness.prepare(tiny_quotas(), day=DAY + dt.timedelta(days=2))
    assert attempts(harness, again) == {2}
    assert sorted(harness.query("SELECT source_key FROM call_summary_pending")) == sorted((k,) for k in keys)


def test_a_record_that_succeeds_on_a_retry_leaves_the_queue(harness):
    keys = harness.add_calls(6)
    failing_runs(harness, 1)
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
    failing_runs(pg_harness, 2)
    dead = pg_harness.query("SELECT source_key FROM call_summary_errors WHERE dead_lettered")
    assert sorted(key for (key,) in dead) == sorted(keys)
    assert pg_harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
