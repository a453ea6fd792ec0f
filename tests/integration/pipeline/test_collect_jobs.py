"""collect_job on every way a job can end, with real stand-in output and a SQLite or Postgres warehouse."""

from __future__ import annotations

import time

import orjson
import pytest

from bedrock_batch.s3paths import list_keys, split_s3_uri
from bedrock_batch.staging import iter_record_map
from tests.integration.pipeline.support import BUCKET, tiny_quotas

RECORDS = 10
LLAMA = "meta.llama3-1-8b-instruct-v1:0"


def one_job(harness, *, tags=None, model_id=None):
    """Prepare RECORDS calls into one job, submit it with ``tags`` and wait until it ends."""
    keys = harness.add_calls(RECORDS)
    prepared = harness.prepare(tiny_quotas())
    (job,) = prepared.jobs
    info = harness.wait(harness.submit(job, run_id=prepared.run_id, tags=tags, model_id=model_id))
    return keys, prepared, job, info


def output_keys(harness, job, info) -> list[str]:
    bucket, prefix = split_s3_uri(job.output_s3_uri)
    job_id = info["jobArn"].rsplit("/", 1)[-1]
    return list(list_keys(harness.s3, bucket, f"{prefix.rstrip('/')}/{job_id}/"))


def pending(harness) -> dict[str, str]:
    return dict(harness.query("SELECT source_key, reason FROM call_summary_pending"))


def errors(harness, stage: str) -> list[tuple]:
    return harness.query(
        "SELECT source_key, code, message, retryable, dead_lettered FROM call_summary_errors WHERE stage = ?",
        (stage,),
    )


def state(harness) -> list[list[tuple]]:
    """Every warehouse row of the pipeline, without the load timestamps."""
    return [
        harness.table(
            "call_summaries",
            "source_key, prompt_version, model_id, summary, input_tokens, output_tokens, stop_reason,"
            " job_arn, run_id",
        ),
        harness.table(
            "call_summary_errors",
            "source_key, prompt_version, run_id, stage, code, message, attempt, retryable, dead_lettered,"
            " job_arn",
        ),
        harness.table("call_summary_pending", "source_key, prompt_version, reason, attempts, last_run_id"),
    ]


def test_a_completed_job_loads_every_record(harness):
    keys, prepared, job, info = one_job(harness)
    assert info["status"] == "Completed"
    outcome = harness.collect(prepared, job, info)
    assert (outcome.summarized, outcome.retry, outcome.quarantined, outcome.manifest_problem) == (
        RECORDS,
        0,
        0,
        None,
    )
    assert outcome.input_tokens > 0 and outcome.output_tokens > 0
    rows = harness.query("SELECT source_key, job_arn, run_id FROM call_summaries")
    assert sorted(rows) == sorted((key, info["jobArn"], prepared.run_id) for key in keys)
    assert pending(harness) == {}


def test_a_job_is_read_as_it_ran_when_the_pipeline_switched_to_converse_meanwhile(harness):
    _, prepared, job, info = one_job(harness)  # submitted as InvokeModel (the shipped config)
    harness.configure(model__invocation_type="Converse")  # a deploy while the job ran

    outcome = harness.collect(prepared, job, info)

    assert (outcome.summarized, outcome.quarantined) == (RECORDS, 0)
    assert pending(harness) == {}


def test_a_partially_completed_job_loads_what_was_processed_and_queues_the_rest(harness):
    keys, prepared, job, info = one_job(harness, tags={"local-aws:fault": "partial=4"})
    assert info["status"] == "PartiallyCompleted"
    outcome = harness.collect(prepared, job, info)
    assert (outcome.summarized, outcome.not_processed, outcome.retry) == (4, 6, 6)
    summarized = {key for (key,) in harness.query("SELECT source_key FROM call_summaries")}
    queued = pending(harness)
    assert set(queued.values()) == {"retry"}
    assert summarized.isdisjoint(queued) and summarized | set(queued) == set(keys)
    assert {(code, message) for _, code, message, _, _ in errors(harness, "batch_job")} == {
        ("job_partiallycompleted", info["message"])
    }


def test_a_job_stopped_mid_run_loads_what_it_processed_and_queues_the_rest(harness):
    keys = harness.add_calls(RECORDS)
    prepared = harness.prepare(tiny_quotas())
    (job,) = prepared.jobs
    job_arn = harness.submit(job, run_id=prepared.run_id, tags={"local-aws:fault": "hold=4"})
    deadline = time.monotonic() + 30
    while harness.hook.get_job(job_arn).get("processedRecordCount", 0) < 4:
        assert time.monotonic() < deadline, "the job never processed its first 4 records"
        time.sleep(0.02)
    harness.hook.stop_job(job_arn)
    info = harness.wait(job_arn)
    assert info["status"] == "Stopped"
    outcome = harness.collect(prepared, job, info)
    assert (outcome.summarized, outcome.not_processed, outcome.retry) == (4, 6, 6)
    summarized = {key for (key,) in harness.query("SELECT source_key FROM call_summaries")}
    assert summarized.isdisjoint(pending(harness)) and summarized | set(pending(harness)) == set(keys)


@pytest.mark.parametrize(
    ("fault", "status"), [("fail", "Failed"), ("expire", "Expired"), ("stick", "Stopped")]
)
def test_a_job_that_did_not_run_queues_every_record_with_the_job_message(harness, fault, status):
    keys = harness.add_calls(RECORDS)
    prepared = harness.prepare(tiny_quotas())
    (job,) = prepared.jobs
    job_arn = harness.submit(job, run_id=prepared.run_id, tags={"local-aws:fault": fault})
    if fault == "stick":
        harness.wait(job_arn, until=frozenset({"Scheduled"}))
        harness.hook.stop_job(job_arn)
    info = harness.wait(job_arn)
    assert info["status"] == status
    outcome = harness.collect(prepared, job, info)
    assert (outcome.summarized, outcome.not_processed, outcome.retry) == (0, RECORDS, RECORDS)
    assert pending(harness) == dict.fromkeys(keys, "retry")
    reason = info.get("message") or f"job ended {status}"
    assert {row[1:] for row in errors(harness, "batch_job")} == {(f"job_{status.lower()}", reason, 1, 0)}
    assert harness.query("SELECT COUNT(*) FROM call_summaries") == [(0,)]


def test_records_failing_with_server_errors_are_model_errors_queued_for_retry(harness):
    _, prepared, job, info = one_job(harness, tags={"local-aws:record-error-rate": "0.5"})
    outcome = harness.collect(prepared, job, info)
    assert 0 < outcome.model_errors < RECORDS
    assert outcome.summarized + outcome.model_errors == RECORDS
    model_errors = errors(harness, "model")
    assert {(code, retryable) for _, code, _, retryable, _ in model_errors} == {("500", 1)}
    assert pending(harness) == {key: "retry" for key, *_ in model_errors}


def test_throttled_records_are_model_errors_queued_for_retry(harness):
    _, prepared, job, info = one_job(harness)
    (out_key,) = [key for key in output_keys(harness, job, info) if key.endswith(".jsonl.out")]
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    throttled = orjson.loads(lines[0])
    del throttled["modelOutput"]
    throttled["error"] = {"errorCode": 429, "errorMessage": "Too many requests, please wait."}
    lines[0] = orjson.dumps(throttled) + b"\n"
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))

    outcome = harness.collect(prepared, job, info)

    assert (outcome.model_errors, outcome.summarized) == (1, RECORDS - 1)
    ((key, code, _, retryable, dead),) = errors(harness, "model")
    assert (code, retryable, dead) == ("429", 1, 0)
    assert pending(harness) == {key: "retry"}


def test_input_errors_are_recorded_as_final_not_retried(harness):
    # Claude-shaped input sent to a Llama model: every record fails with 400 (malformed input).
    keys, prepared, job, info = one_job(harness, model_id=LLAMA)
    outcome = harness.collect(prepared, job, info)
    assert (outcome.model_errors, outcome.retry) == (RECORDS, 0)
    model_errors = errors(harness, "model")
    assert {(code, retryable) for _, code, _, retryable, _ in model_errors} == {("400", 0)}
    assert sorted(key for key, *_ in model_errors) == sorted(keys)
    assert pending(harness) == {}


def test_a_garbled_output_line_is_quarantined_with_file_and_line_and_its_record_queued(harness):
    _, prepared, job, info = one_job(harness)
    (out_key,) = [key for key in output_keys(harness, job, info) if key.endswith(".jsonl.out")]
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    garbled_id = orjson.loads(lines[2])["recordId"]
    lines[2] = lines[2][: len(lines[2]) // 2] + b"\n"  # a truncated write
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))
    outcome = harness.collect(prepared, job, info)
    assert (outcome.quarantined, outcome.summarized, outcome.not_processed) == (1, RECORDS - 1, 1)
    assert outcome.quarantine_samples[0].startswith(f"{out_key}:3:")
    assert "processedRecordCount" in outcome.manifest_problem
    garbled_key = {rid: key for rid, key, _ in iter_record_map(harness.s3, job.map_s3_uri)}[garbled_id]
    assert pending(harness) == {garbled_key: "retry"}
    ((code, retryable),) = harness.query(
        "SELECT code, retryable FROM call_summary_errors WHERE source_key = ?", (garbled_key,)
    )
    assert (code, retryable) == ("output_missing", 1)


def test_a_processed_record_whose_output_cannot_be_read_is_a_final_error_naming_file_line_and_reason(
    harness,
):
    _, prepared, job, info = one_job(harness)
    (out_key,) = [key for key in output_keys(harness, job, info) if key.endswith(".jsonl.out")]
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    odd_id = orjson.loads(lines[1])["recordId"]
    lines[1] = orjson.dumps({"recordId": odd_id, "modelOutput": {"weird": True}}) + b"\n"
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))

    outcome = harness.collect(prepared, job, info)

    assert (outcome.output_unreadable, outcome.not_processed, outcome.summarized) == (1, 0, RECORDS - 1)
    odd_key = {rid: key for rid, key, _ in iter_record_map(harness.s3, job.map_s3_uri)}[odd_id]
    ((stage, code, retryable, message),) = harness.query(
        "SELECT stage, code, retryable, message FROM call_summary_errors WHERE source_key = ?", (odd_key,)
    )
    assert (stage, code, retryable) == ("output", "output_unreadable", 0)
    assert message.startswith(f"the job processed this record; its output line is unreadable: {out_key}:2: ")
    assert odd_key not in pending(harness)  # billed once already: not sent again until someone looks


def test_the_jobs_tokens_are_what_its_manifest_bills_including_records_left_without_a_summary(harness):
    _, prepared, job, info = one_job(harness)
    keys = output_keys(harness, job, info)
    (out_key,) = [key for key in keys if key.endswith(".jsonl.out")]
    (manifest_key,) = [key for key in keys if key.endswith("manifest.json.out")]
    manifest = orjson.loads(harness.s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    no_text = orjson.loads(lines[1])
    no_text["modelOutput"]["content"] = []  # billed, but nothing to keep: an output_unreadable error
    lines[1] = orjson.dumps(no_text) + b"\n"
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))

    outcome = harness.collect(prepared, job, info)

    assert outcome.output_unreadable == 1
    assert outcome.manifest_problem is None  # the record was processed, as the manifest counts it
    assert (outcome.input_tokens, outcome.output_tokens) == (
        manifest["inputTokenCount"],
        manifest["outputTokenCount"],
    )
    loaded = harness.query("SELECT SUM(input_tokens), SUM(output_tokens) FROM call_summaries")
    assert loaded[0][0] < outcome.input_tokens and loaded[0][1] < outcome.output_tokens


def test_a_job_without_token_counts_in_its_manifest_counts_the_tokens_of_its_summaries(harness):
    _, prepared, job, info = one_job(harness)
    (manifest_key,) = [key for key in output_keys(harness, job, info) if key.endswith("manifest.json.out")]
    manifest = orjson.loads(harness.s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read())
    del manifest["inputTokenCount"], manifest["outputTokenCount"]
    harness.s3.put_object(Bucket=BUCKET, Key=manifest_key, Body=orjson.dumps(manifest))

    outcome = harness.collect(prepared, job, info)

    loaded = harness.query("SELECT SUM(input_tokens), SUM(output_tokens) FROM call_summaries")
    assert (outcome.input_tokens, outcome.output_tokens) == loaded[0]


def test_a_readable_line_of_a_record_wins_over_an_unreadable_one(harness):
    _, prepared, job, info = one_job(harness)
    (out_key,) = [key for key in output_keys(harness, job, info) if key.endswith(".jsonl.out")]
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    odd_id = orjson.loads(lines[1])["recordId"]
    lines.insert(0, orjson.dumps({"recordId": odd_id, "modelOutput": {"weird": True}}) + b"\n")
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))

    outcome = harness.collect(prepared, job, info)

    assert (outcome.output_unreadable, outcome.quarantined, outcome.summarized) == (0, 1, RECORDS)


def test_a_success_line_of_a_record_wins_over_an_earlier_error_line_of_it(harness):
    _, prepared, job, info = one_job(harness)
    (out_key,) = [key for key in output_keys(harness, job, info) if key.endswith(".jsonl.out")]
    lines = harness.s3.get_object(Bucket=BUCKET, Key=out_key)["Body"].read().splitlines(keepends=True)
    twice_id = orjson.loads(lines[1])["recordId"]
    error = {"recordId": twice_id, "error": {"errorCode": 429, "errorMessage": "Too many requests"}}
    lines.insert(0, orjson.dumps(error) + b"\n")
    harness.s3.put_object(Bucket=BUCKET, Key=out_key, Body=b"".join(lines))

    outcome = harness.collect(prepared, job, info)

    assert (outcome.summarized, outcome.model_errors, outcome.unexpected) == (RECORDS, 0, 0)
    assert harness.query("SELECT COUNT(*) FROM call_summary_errors") == [(0,)]
    assert pending(harness) == {}


def test_a_missing_manifest_is_reported_and_the_records_still_load(harness):
    _, prepared, job, info = one_job(harness)
    (manifest,) = [key for key in output_keys(harness, job, info) if key.endswith("manifest.json.out")]
    harness.s3.delete_object(Bucket=BUCKET, Key=manifest)
    outcome = harness.collect(prepared, job, info)
    assert outcome.manifest_problem == "manifest.json.out is missing"
    assert outcome.summarized == RECORDS


def test_an_unreadable_manifest_is_reported_naming_it_and_the_records_still_load(harness):
    _, prepared, job, info = one_job(harness)
    (manifest,) = [key for key in output_keys(harness, job, info) if key.endswith("manifest.json.out")]
    harness.s3.put_object(Bucket=BUCKET, Key=manifest, Body=b'{"totalRecordCount": 5}')
    outcome = harness.collect(prepared, job, info)
    assert outcome.manifest_problem.startswith(manifest)
    assert "is missing" in outcome.manifest_problem
    assert outcome.summarized == RECORDS


def test_a_job_never_submitted_carries_every_record_over_without_spending_an_attempt(harness):
    keys = harness.add_calls(RECORDS)
    prepared = harness.prepare(tiny_quotas())
    outcome = harness.collect(prepared, prepared.jobs[0], None)
    assert (outcome.status, outcome.retry, outcome.not_processed) == ("NotSubmitted", RECORDS, RECORDS)
    assert pending(harness) == dict.fromkeys(keys, "carried_over")
    assert harness.query("SELECT COUNT(*) FROM call_summary_errors") == [(0,)]


def test_collecting_the_same_job_twice_gives_the_same_rows(harness):
    _, prepared, job, info = one_job(
        harness, tags={"local-aws:fault": "partial=6", "local-aws:record-error-rate": "0.3"}
    )
    harness.collect(prepared, job, info)
    first = state(harness)
    assert first[0] and first[1] and first[2]  # summaries, errors and retries all present
    harness.collect(prepared, job, info)
    assert state(harness) == first


@pytest.mark.postgres
def test_collecting_the_same_job_twice_gives_the_same_rows_on_postgres(pg_harness):
    _, prepared, job, info = one_job(
        pg_harness, tags={"local-aws:fault": "partial=6", "local-aws:record-error-rate": "0.3"}
    )
    pg_harness.collect(prepared, job, info)
    first = state(pg_harness)
    assert first[0] and first[1] and first[2]
    pg_harness.collect(prepared, job, info)
    assert state(pg_harness) == first
