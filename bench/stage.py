"""Scenario 1, assemble and stage: source rows -> checked records -> JSONL in S3.

Each function measures one path over ``size`` rows and returns ``{"records", "bytes", "seconds"}``;
the rows are generated chunk by chunk outside the stopwatch, so only the path's own work is timed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from bench.common import BUCKET, Stopwatch, delete_prefix, null_s3, pipeline, s3_client
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
        upload_threads=p.config.staging.upload_threads,
    )


def project(size: int, *, sink: str = "s3") -> dict[str, Any]:
    """prepare.py's path: stage_records (RecordBuilder, rejections -> JsonlStager); S3 or a null sink."""
    from bedrock_batch.prepare import PrepareCounts, RejectionSink, stage_records

    p = pipeline()
    s3 = null_s3() if sink == "null" else s3_client()
    prefix = f"stage/project-{sink}-{size}"
    builder = p.builder()
    rejections = RejectionSink(None, run_id="bench", prompt_version=p.prompt.version)
    counts = PrepareCounts()
    watch = Stopwatch()
    stager = _stager(s3, prefix, size)
    with stager:
        for chunk in iter_chunks(size):
            with watch:
                stage_records(chunk, p.config, builder, rejections, counts, stager, capacity=size)
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


def _records(chunk: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The JSONL objects of the chunk's records, built without serialising them.

    The builder serialises every record (that is its check), and CPython keeps the UTF-8 form of a
    non-ASCII string once it has been asked for it: a limit timed on the builder's records would
    encode warm strings and overstate the raw rate. These are the same objects, never serialised.
    """
    from bedrock_batch.prepare import source_row
    from bedrock_batch.records import record_id_for

    p = pipeline()
    params = p.config.model.params
    objects = []
    for row in chunk:
        source = source_row(row, p.config)
        system, user = p.prompt.render({**source.fields, p.config.source.text_column: source.text})
        model_input = p.family.build_input(system=system, prompt=user, params=params)
        objects.append({"recordId": record_id_for(row["source_key"]), "modelInput": model_input})
    return objects


def serialize_limit(size: int) -> dict[str, Any]:
    """Raw orjson rate: the same records' JSONL lines into a null sink, nothing else timed."""
    import orjson

    watch = Stopwatch()
    written = 0
    for chunk in iter_chunks(size):
        objects = _records(chunk)
        with watch:
            for obj in objects:
                written += len(orjson.dumps(obj)) + 1
    return {"records": size, "bytes": written, "seconds": watch.seconds}


def _file_parts(size: int, per_file: int) -> Iterator[list[bytes]]:
    """The bytes the stager would write, as one list of ``PART_SIZE`` parts per input file."""
    import orjson

    parts: list[bytes] = []
    buffer = bytearray()
    in_file = 0
    for chunk in iter_chunks(size):
        for obj in _records(chunk):
            buffer += orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
            in_file += 1
            if len(buffer) >= PART_SIZE:
                parts.append(bytes(buffer))
                buffer = bytearray()
            if in_file >= per_file:
                yield [*parts, bytes(buffer)] if buffer else parts
                parts, buffer, in_file = [], bytearray(), 0
    if buffer or parts:
        yield [*parts, bytes(buffer)] if buffer else parts


def upload_limit(size: int) -> dict[str, Any]:
    """Raw multipart rate of the same bytes, sent as the stager sends them and nothing else.

    Same part size, CRC32 checksums and number of upload threads, one object per input file; the
    parts of a file are serialised before its upload starts, so only S3 calls are timed. Each file
    is completed before the next one's parts go (the stager completes a file on another thread while
    the next one's parts go: on the stand-in that measured the same, its one process being busy
    assembling the object either way).
    """
    from concurrent.futures import ThreadPoolExecutor

    from bedrock_batch.staging import CHECKSUM_ALGORITHM, CHECKSUM_FIELD

    p = pipeline()
    s3 = s3_client()
    prefix = f"stage/upload-limit-{size}"
    watch = Stopwatch()
    written = files = 0

    def send(key: str, upload_id: str, number: int, body: bytes) -> dict[str, Any]:
        response = s3.upload_part(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
        )
        return {"ETag": response["ETag"], "PartNumber": number, CHECKSUM_FIELD: response[CHECKSUM_FIELD]}

    with ThreadPoolExecutor(max_workers=p.config.staging.upload_threads) as pool:
        for parts in _file_parts(size, p.quotas.max_records_per_file):
            files += 1
            written += sum(len(part) for part in parts)
            key = f"{prefix}/part-{files:05d}.jsonl"
            with watch:
                upload_id = s3.create_multipart_upload(
                    Bucket=BUCKET, Key=key, ChecksumAlgorithm=CHECKSUM_ALGORITHM
                )["UploadId"]
                sent = [
                    pool.submit(send, key, upload_id, number, body)
                    for number, body in enumerate(parts, start=1)
                ]
                s3.complete_multipart_upload(
                    Bucket=BUCKET,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": [future.result() for future in sent]},
                )
            del parts, sent
    delete_prefix(s3, BUCKET, prefix)
    return {"records": size, "bytes": written, "seconds": watch.seconds, "files": files}
