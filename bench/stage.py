"""Scenario 1, assemble and stage: source rows -> checked records -> JSONL in S3.

Each function measures one path over ``size`` rows and returns ``{"records", "bytes", "seconds"}``;
the rows are generated chunk by chunk outside the stopwatch, so only the path's own work is timed.
"""

from __future__ import annotations

from typing import Any

from bench.common import BUCKET, NullS3, Stopwatch, delete_prefix, pipeline, s3_client
from bench.data import iter_chunks

PART_SIZE = 8 * 1024 * 1024


def _stager(s3: Any, prefix: str, size: int) -> Any:
    from bedrock_batch.quotas import plan_job_sizes
    from bedrock_batch.staging import JsonlStager

    p = pipeline()
    return JsonlStager(
        s3,
        bucket=BUCKET,
        prefix=prefix,
        job_sizes=plan_job_sizes(size, p.quotas),
        quotas=p.quotas,
        job_name_prefix="bench-stage",
        output_bucket=BUCKET,
        output_prefix=f"{prefix}-out",
        part_size=PART_SIZE,
    )


def project(size: int, *, sink: str = "s3") -> dict[str, Any]:
    """prepare.py's path: iter_records (RecordBuilder, rejections) -> JsonlStager; S3 or a null sink."""
    from bedrock_batch.prepare import PrepareCounts, RejectionSink, iter_records

    p = pipeline()
    s3 = NullS3() if sink == "null" else s3_client()
    prefix = f"stage/project-{sink}-{size}"
    builder = p.builder()
    rejections = RejectionSink(None, run_id="bench", prompt_version=p.prompt.version)
    counts = PrepareCounts()
    watch = Stopwatch()
    stager = _stager(s3, prefix, size)
    with stager:
        for chunk in iter_chunks(size):
            with watch:
                for record in iter_records(chunk, p.config, builder, rejections, counts):
                    stager.add(record)
        with watch:
            plan = stager.close()
    if plan.records != size or rejections.count:
        raise RuntimeError(f"staged {plan.records} of {size} records ({rejections.by_code} rejected)")
    if sink != "null":
        delete_prefix(s3, BUCKET, prefix)
    return {"records": plan.records, "bytes": plan.bytes, "seconds": watch.seconds, "jobs": len(plan.jobs)}


def baseline(size: int) -> dict[str, Any]:
    """json.dumps per record into a list, one "\\n".join, one put_object."""
    from bench.baselines import NaiveStager

    p = pipeline()
    s3 = s3_client()
    key = f"stage/baseline-{size}/input.jsonl"
    naive = NaiveStager(p.prompt.system, p.prompt.user, p.config.model.params)
    watch = Stopwatch()
    for chunk in iter_chunks(size):
        with watch:
            naive.add_rows(chunk)
    with watch:
        written = naive.upload(s3, BUCKET, key)
    records = len(naive.lines)
    del naive
    delete_prefix(s3, BUCKET, f"stage/baseline-{size}/")
    return {"records": records, "bytes": written, "seconds": watch.seconds}


def _records(chunk: list[dict[str, Any]], builder: Any) -> list[Any]:
    from bedrock_batch.prepare import source_row

    config = pipeline().config
    return [builder.build(source_row(row, config)) for row in chunk]


def serialize_limit(size: int) -> dict[str, Any]:
    """Raw orjson rate: the same records' JSONL lines into a null sink, nothing else timed."""
    import orjson

    builder = pipeline().builder()
    watch = Stopwatch()
    written = 0
    for chunk in iter_chunks(size):
        records = _records(chunk, builder)
        with watch:
            for record in records:
                written += len(orjson.dumps({"recordId": record.record_id, "modelInput": record.model_input}))
                written += 1
    return {"records": size, "bytes": written, "seconds": watch.seconds}


def upload_limit(size: int) -> dict[str, Any]:
    """Raw multipart rate of the same bytes: 8 MiB parts, one object per file the stager would write."""
    import orjson

    p = pipeline()
    s3 = s3_client()
    prefix = f"stage/upload-limit-{size}"
    per_file = p.quotas.max_records_per_file
    builder = p.builder()
    watch = Stopwatch()
    state: dict[str, Any] = {"upload": None, "parts": [], "key": None, "in_file": 0, "files": 0}
    buffer = bytearray()
    written = 0

    def flush_part() -> None:
        nonlocal buffer
        with watch:
            if state["upload"] is None:
                state["files"] += 1
                state["key"] = f"{prefix}/part-{state['files']:05d}.jsonl"
                state["upload"] = s3.create_multipart_upload(Bucket=BUCKET, Key=state["key"])["UploadId"]
            number = len(state["parts"]) + 1
            etag = s3.upload_part(
                Bucket=BUCKET,
                Key=state["key"],
                UploadId=state["upload"],
                PartNumber=number,
                Body=bytes(buffer),
            )["ETag"]
            state["parts"].append({"ETag": etag, "PartNumber": number})
        buffer = bytearray()

    def finish_file() -> None:
        if buffer:
            flush_part()
        if state["upload"] is not None:
            with watch:
                s3.complete_multipart_upload(
                    Bucket=BUCKET,
                    Key=state["key"],
                    UploadId=state["upload"],
                    MultipartUpload={"Parts": state["parts"]},
                )
        state.update(upload=None, parts=[], in_file=0)

    for chunk in iter_chunks(size):
        for record in _records(chunk, builder):
            line = orjson.dumps({"recordId": record.record_id, "modelInput": record.model_input}) + b"\n"
            buffer += line
            written += len(line)
            state["in_file"] += 1
            if len(buffer) >= PART_SIZE:
                flush_part()
            if state["in_file"] >= per_file:
                finish_file()
    finish_file()
    delete_prefix(s3, BUCKET, prefix)
    return {"records": size, "bytes": written, "seconds": watch.seconds, "files": state["files"]}
