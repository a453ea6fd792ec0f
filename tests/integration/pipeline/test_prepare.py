"""RunPreparer on the stand-in's S3 and a SQLite warehouse: splits at every limit, and no row lost."""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import Counter

import pytest

from bedrock_batch.errors import ConfigError, EarlierTryError, QuotaError
from bedrock_batch.prepare import resolve_quotas
from tests.integration.pipeline.support import BUCKET, DAY, tiny_quotas


def line_size(harness) -> int:
    """Bytes of one input line of ``add_calls`` (all are the same size)."""
    harness.add_calls(1, tag="probe")
    prepared = harness.prepare(tiny_quotas(min_records_per_job=1), dry_run=True)
    harness.execute(["DELETE FROM call_transcripts"])
    return prepared.plan["planned_jobs"][0]["bytes"]


def assert_each_row_in_one_place(harness, prepared, keys) -> Counter[str]:
    where = harness.placements(prepared)
    assert set(where) == set(keys)
    assert all(sum(places.values()) == 1 for places in where.values()), {
        key: places for key, places in where.items() if sum(places.values()) != 1
    }
    return Counter(next(iter(places)) for places in where.values())


def test_the_pipelines_upload_threads_go_to_its_stager(harness, monkeypatch):
    import bedrock_batch.prepare as prepare_module

    threads: list[int] = []

    class NotedStager(prepare_module.JsonlStager):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            threads.append(self.upload_threads)

    monkeypatch.setattr(prepare_module, "JsonlStager", NotedStager)
    harness.configure(staging__upload_threads=3).add_calls(6)

    harness.prepare(tiny_quotas())

    assert threads and set(threads) == {3}


@pytest.mark.parametrize(("records", "files"), [(7, [4, 3]), (8, [4, 4]), (9, [4, 4, 1])])
def test_files_roll_at_max_records_per_file(harness, records, files):
    harness.add_calls(records)
    prepared = harness.prepare(tiny_quotas(max_records_per_file=4))
    (job,) = prepared.jobs
    assert [f.records for f in job.files] == files
    assert [len(lines) for lines in harness.input_lines(job)] == files


@pytest.mark.parametrize(("slack", "per_file"), [(-1, 2), (0, 3), (1, 3)])
def test_files_roll_at_max_file_bytes(harness, slack, per_file):
    size = line_size(harness)
    harness.add_calls(7)
    prepared = harness.prepare(tiny_quotas(max_file_bytes=3 * size + slack))
    (job,) = prepared.jobs
    assert all(f.records <= per_file and f.bytes <= 3 * size + slack for f in job.files)
    assert job.files[0].records == per_file
    assert sum(f.records for f in job.files) == 7


@pytest.mark.parametrize(
    ("records", "jobs"), [(6, [6]), (7, None), (11, [6, 5]), (12, [6, 6]), (13, [5, 4, 4])]
)
def test_jobs_split_at_max_records_per_job_and_never_under_the_minimum(harness, records, jobs):
    harness.add_calls(records)
    quotas = tiny_quotas(min_records_per_job=4, max_records_per_job=6)
    if jobs is None:  # 7 = 4 + 3: no split keeps both jobs at the minimum
        with pytest.raises(QuotaError, match="min_records_per_job"):
            harness.prepare(quotas)
        return
    prepared = harness.prepare(quotas)
    assert [job.records for job in prepared.jobs] == jobs
    assert prepared.counts["staged"] == records


def test_a_job_ends_early_at_max_job_bytes_and_its_records_move_on(harness):
    size = line_size(harness)
    harness.add_calls(12)
    prepared = harness.prepare(tiny_quotas(min_records_per_job=2, max_job_bytes=5 * size))
    assert [job.records for job in prepared.jobs] == [5, 5, 2]
    assert all(job.bytes <= 5 * size for job in prepared.jobs)
    assert sorted(harness.staged_keys(prepared)) == sorted(f"c-20261110-{n:04d}" for n in range(12))


def test_a_last_job_under_the_minimum_after_rejections_is_carried_over(harness):
    keys = harness.add_calls(10)
    harness.insert([("empty-1", ""), ("empty-2", "   ")])
    prepared = harness.prepare(tiny_quotas(min_records_per_job=5, max_records_per_job=6))
    # 12 rows counted -> jobs of 6 + 6; two are rejected, so the second job would have 4 < 5.
    assert [job.records for job in prepared.jobs] == [6]
    counts = prepared.counts
    assert (counts["staged"], counts["rejected"], counts["carried_over"]) == (6, 2, 4)
    assert assert_each_row_in_one_place(harness, prepared, [*keys, "empty-1", "empty-2"]) == {
        "staged": 6,
        "rejected": 2,
        "carried_over": 4,
    }


def test_record_limit_reads_only_that_many_rows_and_leaves_the_rest_for_later(harness):
    keys = harness.add_calls(20)
    prepared = harness.prepare(tiny_quotas(), record_limit=7)
    assert prepared.counts["source_rows"] == 7
    assert harness.staged_keys(prepared) == keys[:7]
    assert harness.query("SELECT COUNT(*) FROM call_summary_pending") == [(0,)]
    later = harness.prepare(tiny_quotas())
    assert harness.staged_keys(later) == keys  # nothing was summarized yet: all 20 again


def test_record_limit_counts_and_warns_about_the_rows_it_leaves_unread(harness, caplog):
    harness.add_calls(20)
    with caplog.at_level(logging.WARNING, logger="bedrock_batch.prepare"):
        prepared = harness.prepare(tiny_quotas(), record_limit=7)
    assert prepared.counts["left_unread"] == 13
    assert "record_limit 7 leaves 13 rows unread" in caplog.text


def test_record_limit_claims_only_the_pending_keys_the_run_reads(harness):
    from bedrock_batch.prompts import load_prompt

    version = load_prompt(harness.config.prompt_path).version
    queued = harness.add_calls(8, day=DAY - dt.timedelta(days=3), tag="q")
    harness.warehouse.ensure_schema()
    harness.warehouse.carry_over(queued, run_id="earlier", prompt_version=version)

    prepared = harness.prepare(tiny_quotas(), record_limit=5)

    assert harness.staged_keys(prepared) == sorted(queued)[:5]
    claims = dict(harness.query("SELECT source_key, claimed_by FROM call_summary_pending"))
    assert {key for key, holder in claims.items() if holder is None} == set(sorted(queued)[5:])


def queue_claimed_long_ago(harness, holder: str) -> str:
    """Queue 8 keys that run ``holder`` claimed past the claim TTL; return the prompt version."""
    from bedrock_batch.prompts import load_prompt

    version = load_prompt(harness.config.prompt_path).version
    queued = harness.add_calls(8, day=DAY - dt.timedelta(days=3), tag="q")
    harness.warehouse.ensure_schema()
    harness.warehouse.carry_over(queued, run_id="earlier", prompt_version=version)
    harness.warehouse.claim_pending(run_id=holder, prompt_version=version)
    harness.execute(["UPDATE call_summary_pending SET claimed_at = '2026-01-01 00:00:00'"])
    return version


def test_queued_keys_a_run_in_flight_claimed_days_ago_stay_its_own(harness):
    """It may have waited days for a pool slot or the jobs-in-flight quota: its job still sends them."""
    queue_claimed_long_ago(harness, "waiting")

    prepared = harness.prepare(tiny_quotas(), run_is_live=lambda run_id: run_id == "waiting")

    assert harness.staged_keys(prepared) == []
    assert set(harness.query("SELECT claimed_by FROM call_summary_pending")) == {("waiting",)}


def test_a_run_holding_the_window_and_queued_keys_is_asked_about_once(harness):
    version = queue_claimed_long_ago(harness, "failed")
    harness.execute(
        [
            "INSERT INTO call_summary_pending_windows"
            " (run_id, prompt_version, window_start, window_end, claimed_at)"
            f" VALUES ('failed', '{version}', '{DAY} 00:00:00', '{DAY + dt.timedelta(days=1)} 00:00:00',"
            " '2026-01-01 00:00:00')",
        ]
    )
    asked: list[str] = []

    harness.prepare(tiny_quotas(), run_is_live=lambda run_id: asked.append(run_id) or False)

    assert asked == ["failed"]


def test_keys_queued_before_the_prompt_changed_are_staged_with_the_new_prompt(harness):
    queued = harness.add_calls(8, day=DAY - dt.timedelta(days=3), tag="q")
    harness.warehouse.ensure_schema()
    harness.warehouse.carry_over(queued, run_id="earlier", prompt_version="v0")  # the prompt's last version

    prepared = harness.prepare(tiny_quotas())

    assert sorted(harness.staged_keys(prepared)) == sorted(queued)


def test_record_limit_does_not_spend_its_claim_on_a_queued_key_out_of_attempts(harness):
    from bedrock_batch.prompts import load_prompt
    from bedrock_batch.warehouse import ErrorRow

    version = load_prompt(harness.config.prompt_path).version
    queued = sorted(harness.add_calls(8, day=DAY - dt.timedelta(days=3), tag="q"))
    harness.warehouse.ensure_schema()
    harness.warehouse.carry_over(queued, run_id="earlier", prompt_version=version)
    for attempt in range(1, harness.config.max_attempts + 1):  # queued again after each try
        harness.warehouse.load_job(
            [],
            [ErrorRow(queued[0], "model", "500", "internal error", retryable=True, attempt=attempt)],
            run_id=f"try-{attempt}",
            job_arn=f"arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/try-{attempt}",
            prompt_version=version,
            model_id="m",
            max_attempts=harness.config.max_attempts + 1,
        )

    prepared = harness.prepare(tiny_quotas(), record_limit=5)

    assert harness.staged_keys(prepared) == queued[1:6]
    assert harness.query(
        "SELECT code, dead_lettered FROM call_summary_errors WHERE source_key = ? AND run_id = ?",
        (queued[0], prepared.run_id),
    ) == [("attempts_exhausted", 1)]  # not left queued for good


def test_a_model_override_of_another_family_fails_prepare_before_anything_is_staged(harness):
    harness.add_calls(5)
    with pytest.raises(ConfigError, match=r"model_id param 'amazon\.nova-lite-v1:0'"):
        harness.prepare(tiny_quotas(), model_id="amazon.nova-lite-v1:0")
    staged = harness.s3.list_objects_v2(
        Bucket=BUCKET, Prefix=f"{harness.config.staging.input_prefix}/{harness.config.name}/"
    )
    assert staged["KeyCount"] == 0


def test_a_model_override_of_the_same_family_is_planned_with_it(harness):
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas(), model_id="anthropic.claude-3-5-sonnet-20240620-v1:0")
    assert prepared.plan["model_id"] == "anthropic.claude-3-5-sonnet-20240620-v1:0"
    assert prepared.plan["on_demand_model_id"] == "anthropic.claude-3-5-sonnet-20240620-v1:0"


def test_a_model_override_to_a_custom_model_with_no_on_demand_model_fails_prepare_naming_both(harness):
    harness.add_calls(5)
    custom = (
        "arn:aws:bedrock:us-east-1:123456789012:custom-model/"
        "anthropic.claude-3-5-haiku-20241022-v1:0/a1b2c3d4e5f6"
    )
    with pytest.raises(ConfigError, match=r"model_id param: .*custom model.*small_batch\.on_demand_model_id"):
        harness.prepare(tiny_quotas(), model_id=custom)


def test_dry_run_stages_but_writes_nothing_to_the_warehouse_and_plans_no_jobs(harness):
    keys = harness.add_calls(8)
    harness.insert([("empty-1", "")])
    prepared = harness.prepare(tiny_quotas(), dry_run=True)
    assert prepared.plan["jobs"] == []
    assert [job["records"] for job in prepared.plan["planned_jobs"]] == [8]
    assert harness.staged_keys(prepared) == keys
    assert prepared.plan["rejected_by_code"] == {"empty_text": 1}
    for table in ("call_summaries", "call_summary_errors", "call_summary_pending"):
        assert harness.query(f"SELECT COUNT(*) FROM {table}") == [(0,)]


def test_re_summarize_reads_rows_already_summarized(harness):
    keys = harness.add_calls(6)
    first = harness.prepare(tiny_quotas())
    (outcome,) = harness.run_jobs(first)
    assert outcome.summarized == 6
    assert harness.prepare(tiny_quotas()).counts["source_rows"] == 0
    again = harness.prepare(tiny_quotas(), re_summarize=True)
    assert harness.staged_keys(again) == keys


def test_every_bad_row_kind_goes_to_the_error_table_with_its_code(aws_env, local_aws_clean, sqlite_warehouse):
    from tests.integration.pipeline.support import PipelineHarness

    harness = PipelineHarness(sqlite_warehouse, local_aws_clean).configure()
    harness.create_source(loose=True)  # no primary key: NULL and duplicate keys can be stored
    good = harness.add_calls(6)
    harness.insert(
        [
            (None, "Agent: hello. Customer: hi."),
            (good[0], "Agent: the same call again."),
            ("empty", ""),
            ("blank", " \n\t "),
            ("null-text", None),
            ("bad-utf8", b"Agent: \xff\xfe caf\xe9"),
            ("control", "Agent: hello\x07 there"),
            ("too-long", "word " * 200_000),
        ]
    )
    prepared = harness.prepare(tiny_quotas())
    assert prepared.plan["rejected_by_code"] == {
        "null_key": 1,
        "duplicate_key": 1,
        "empty_text": 3,
        "invalid_utf8": 1,
        "control_characters": 1,
        "too_long": 1,
    }
    assert prepared.counts["source_rows"] == 14
    assert prepared.counts["rejected"] == 8
    errors = dict(
        harness.query(
            "SELECT source_key, code FROM call_summary_errors WHERE run_id = ? AND stage = 'build'"
            " AND source_key <> ?",
            (prepared.run_id, good[0]),
        )
    )
    assert errors == {
        "(null key #1)": "null_key",
        "empty": "empty_text",
        "blank": "empty_text",
        "null-text": "empty_text",
        "bad-utf8": "invalid_utf8",
        "control": "control_characters",
        "too-long": "too_long",
    }
    duplicate = harness.query(
        "SELECT code, retryable FROM call_summary_errors WHERE source_key = ?", (good[0],)
    )
    assert duplicate == [("duplicate_key", 0)]
    assert sorted(harness.staged_keys(prepared)) == sorted(good)  # the first copy of the key is staged


def test_quotas_read_live_from_service_quotas_drive_the_split(harness, local_aws_clean):
    local_aws_clean.admin.set_quotas(min_records_per_job=2, max_records_per_job=4, max_records_per_file=3)
    quotas = resolve_quotas(harness.config, harness.config.model.id, local_aws_clean.client("service-quotas"))
    assert (quotas.min_records_per_job, quotas.max_records_per_job, quotas.max_records_per_file) == (2, 4, 3)
    harness.add_calls(10)
    prepared = harness.prepare(quotas)
    assert [job.records for job in prepared.jobs] == [4, 3, 3]
    assert [[f.records for f in job.files] for job in prepared.jobs] == [[3, 1], [3], [3]]


def test_quota_overrides_of_the_config_win_over_live_values(harness, local_aws_clean):
    local_aws_clean.admin.set_quotas(min_records_per_job=2, max_records_per_job=4)
    harness.configure(jobs__quota_overrides={"max_records_per_job": 9})
    quotas = resolve_quotas(harness.config, harness.config.model.id, local_aws_clean.client("service-quotas"))
    assert quotas.max_records_per_job == 9


# -- a cleared run staging again --------------------------------------------------------------------


def staged_map(harness, prepared) -> bytes:
    (job,) = prepared.jobs
    bucket, key = job.map_s3_uri.removeprefix("s3://").split("/", 1)
    return harness.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def test_a_cleared_run_does_not_stage_again_over_a_job_of_its_earlier_try_that_still_runs(harness):
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    job_arn = harness.submit(prepared.jobs[0], run_id=prepared.run_id, tags={"local-aws:fault": "stick"})
    harness.wait(job_arn, until=frozenset({"Scheduled"}))
    harness.add_calls(2, tag="late")
    before = staged_map(harness, prepared)

    with pytest.raises(EarlierTryError, match=rf"\({job_arn}\) is still Scheduled.*action=stop"):
        harness.prepare(tiny_quotas(), run_id=prepared.run_id)

    assert staged_map(harness, prepared) == before
    harness.hook.stop_job(job_arn)


def test_a_cleared_run_loads_an_ended_job_of_its_earlier_try_before_staging_again(harness):
    first = harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    job_arn = harness.wait(harness.submit(prepared.jobs[0], run_id=prepared.run_id))["jobArn"]
    late = harness.add_calls(6, tag="late")

    again = harness.prepare(tiny_quotas(), run_id=prepared.run_id)

    assert harness.query("SELECT source_key, job_arn, run_id FROM call_summaries ORDER BY 1") == [
        (key, job_arn, prepared.run_id) for key in sorted(first)
    ]
    assert sorted(harness.staged_keys(again)) == sorted(late)


def test_a_cleared_run_stages_the_same_input_again_for_the_job_its_killed_try_submitted(harness):
    """The try was killed after the create: the same input gives the same job, which submit gets back."""
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    job_arn = harness.submit(prepared.jobs[0], run_id=prepared.run_id, tags={"local-aws:fault": "stick"})
    before = staged_map(harness, prepared)

    again = harness.prepare(tiny_quotas(), run_id=prepared.run_id)

    assert staged_map(harness, again) == before
    assert harness.submit(again.jobs[0], run_id=again.run_id) == job_arn
    harness.hook.stop_job(job_arn)


@pytest.mark.parametrize(
    "tags",
    [
        {"local-aws:fault": "fail"},
        {"local-aws:fault": "expire"},
        {"local-aws:record-error-rate": "1"},  # Completed, every record a retryable model error
    ],
)
def test_a_run_cleared_after_its_job_ended_gets_a_new_job_for_the_same_input(harness, tags):
    """Same input, same token: without a new generation Bedrock would give the ended job back."""
    keys = harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    (job,) = prepared.jobs
    failed_arn = harness.submit(job, run_id=prepared.run_id, tags=tags)
    harness.collect(prepared, job, harness.wait(failed_arn))

    again = harness.prepare(tiny_quotas(), run_id=prepared.run_id)

    (retried,) = again.jobs
    assert (retried.job_name, retried.records, retried.generation) == (job.job_name, job.records, 1)
    assert harness.staged_keys(again) == keys
    new_arn = harness.submit(retried, run_id=again.run_id)
    assert new_arn != failed_arn
    harness.collect(again, retried, harness.wait(new_arn))
    assert sorted(key for (key,) in harness.query("SELECT source_key FROM call_summaries")) == sorted(keys)


def test_each_planned_job_names_the_prompt_version_its_submit_tags_it_with(harness):
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    assert [job["prompt_version"] for job in prepared.plan["jobs"]] == [prepared.plan["prompt_version"]]


def test_the_plan_names_the_invocation_type_its_bodies_were_built_for(harness):
    harness.configure(model__invocation_type="Converse")
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    assert prepared.plan["invocation_type"] == "Converse"
    (job,) = prepared.plan["jobs"]
    bucket, _, prefix = job["input_s3_uri"].removeprefix("s3://").partition("/")
    key = harness.s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"][0]["Key"]
    first = json.loads(harness.s3.get_object(Bucket=bucket, Key=key)["Body"].read().splitlines()[0])
    assert "inferenceConfig" in first["modelInput"]  # a Converse request, not Claude's own body


def test_an_earlier_tries_ended_job_is_loaded_under_the_prompt_version_it_was_built_with(harness):
    from bedrock_batch.job_tags import prompt_version_tags

    keys = harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    job_arn = harness.submit(prepared.jobs[0], run_id=prepared.run_id, tags=prompt_version_tags("v-before"))
    harness.wait(job_arn)  # ended, never collected: the try was killed

    harness.prepare(tiny_quotas(), run_id=prepared.run_id)  # loads it before staging again

    assert harness.query("SELECT source_key, prompt_version FROM call_summaries ORDER BY 1") == [
        (key, "v-before") for key in sorted(keys)
    ]


def test_a_cleared_run_whose_earlier_jobs_were_loaded_stages_what_is_left(harness):
    harness.add_calls(5)
    prepared = harness.prepare(tiny_quotas())
    harness.run_jobs(prepared)
    harness.add_calls(6, tag="late")

    again = harness.prepare(tiny_quotas(), run_id=prepared.run_id)

    assert sorted(harness.staged_keys(again)) == [f"late-{DAY:%Y%m%d}-{n:04d}" for n in range(6)]
