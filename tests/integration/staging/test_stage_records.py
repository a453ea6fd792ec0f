"""prepare.stage_records (the hot loop of a run) stages exactly what building and adding each record does."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from bedrock_batch.config import PipelineConfig
from bedrock_batch.models import family_for
from bedrock_batch.prepare import PrepareCounts, RejectionSink, iter_records, record_builder, stage_records
from bedrock_batch.prompts import load_prompt
from bedrock_batch.quotas import BatchQuotas
from bedrock_batch.staging import JsonlStager

SHIPPED_CONFIG = Path(__file__).resolve().parents[3] / "include" / "pipelines" / "summarize_calls.yaml"
QUOTAS = BatchQuotas(
    min_records_per_job=1,
    max_records_per_file=3,
    max_records_per_job=7,
    max_file_bytes=1_000_000,
    max_job_bytes=5_000_000,
    max_concurrent_jobs=2,
)


def config(**model: object) -> PipelineConfig:
    raw = yaml.safe_load(SHIPPED_CONFIG.read_text(encoding="utf-8"))
    raw["model"].update(model)
    return PipelineConfig.model_validate(raw)


def source(key: object, text: object, attempt: int = 1, **extra: object) -> dict[str, object]:
    row = {"source_key": key, "text": text, "attempt": attempt, "origin": "window", "pending_since": None}
    return {**row, "agent_id": "agent-1", "customer_id": "cust-1", **extra}


ROWS = [
    source("c-1", "Agent: hello.\nCustomer: my bill is wrong."),
    source("c-2", 'Quotes " and back\\slashes\tand tabs\r\n', attempt=2),
    source("c-1", "the same key again"),
    source("c-3", "   "),
    source("c-4", None),
    source("c-5", "a bell \x07 rings"),
    source("c-6", "a C1 control \x85 in the middle"),
    source("c-7", "caf\u00e9 \u00bf\u00a0 \U0001f642 only looks odd: \\u0041"),
    source(8, "an integer key"),
    source("c-9", "UTF-8 bytes: caf\u00e9".encode()),
    source("c-10", "lone surrogate \ud800"),
    source("", "an empty key"),
    source("c-11", "an unused column holds a lone surrogate", customer_id="x\udc80"),
    source("c-12", "Word " * 200_000),
    *(source(f"n-{n}", f"Agent: call number {n}.") for n in range(12)),
]


def new_stager(s3, bucket: str, prefix: str, job_sizes: list[int]) -> JsonlStager:
    return JsonlStager(
        s3,
        bucket=bucket,
        prefix=prefix,
        job_sizes=job_sizes,
        quotas=QUOTAS,
        job_name_prefix="demo-run",
        output_bucket=bucket,
        output_prefix=f"{prefix}-out",
    )


def staged_objects(s3, bucket: str, prefix: str) -> dict[str, bytes]:
    contents = s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {
        obj["Key"].removeprefix(prefix): s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        for obj in contents
    }


@pytest.mark.parametrize("on_too_long", ["reject", "truncate"])
def test_stage_records_stages_what_building_and_adding_each_record_stages(local_aws, on_too_long):
    s3 = local_aws.client("s3")
    bucket = f"stage-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    pipeline = config(on_too_long=on_too_long)
    family = family_for(pipeline.model.id, pipeline.model.invocation_type)
    prompt = load_prompt(pipeline.prompt_path)
    outcomes = {}
    for path in ("one-by-one", "hot-loop"):
        builder = record_builder(pipeline, family, prompt)
        rejections = RejectionSink(None, run_id="r", prompt_version=prompt.version)
        counts = PrepareCounts()
        stager = new_stager(s3, bucket, path, [7, 7, 7])
        with stager:
            if path == "one-by-one":
                for record in iter_records(ROWS, pipeline, builder, rejections, counts):
                    stager.add(record)
                    counts.staged += 1
            else:
                assert builder.takes_fast_lines
                assert stage_records(ROWS, pipeline, builder, rejections, counts, stager, capacity=21) == []
        outcomes[path] = (
            staged_objects(s3, bucket, f"{path}/"),
            counts.to_dict(),
            dict(rejections.by_code),
            builder.built,
            builder.truncated,
        )

    assert outcomes["hot-loop"] == outcomes["one-by-one"]
    objects, counts, rejected, *_ = outcomes["hot-loop"]
    assert counts["staged"] == sum(
        body.count(b"\n") for key, body in objects.items() if key.startswith("jobs/")
    )
    assert counts["source_rows"] == len(ROWS) == counts["staged"] + sum(rejected.values())
    assert set(rejected) >= {"duplicate_key", "empty_text", "control_characters", "invalid_utf8", "null_key"}


def test_stage_records_hands_back_the_keys_past_capacity(local_aws):
    s3 = local_aws.client("s3")
    bucket = f"stage-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=bucket)
    pipeline = config()
    builder = record_builder(
        pipeline,
        family_for(pipeline.model.id, pipeline.model.invocation_type),
        load_prompt(pipeline.prompt_path),
    )
    counts = PrepareCounts()
    stager = new_stager(s3, bucket, "p", [5])
    rows = [source(f"k-{n}", f"text {n}") for n in range(8)]
    with stager:
        overflow = stage_records(
            rows,
            pipeline,
            builder,
            RejectionSink(None, run_id="r", prompt_version="v1"),
            counts,
            stager,
            capacity=5,
        )
    assert overflow == ["k-5", "k-6", "k-7"]
    assert counts.staged == 5 and counts.source_rows == 8
    assert stager.plan is not None and stager.plan.records == 5
