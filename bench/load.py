"""Scenario 2, collect and load: Bedrock output files in S3 -> warehouse rows (Postgres, SQLite).

``setup`` writes realistic jobs once per size (Claude Messages ``.jsonl.out`` lines with their
``modelInput``, 1% record errors, a manifest, the stager's map file); ``project`` and ``baseline``
then load the same files into a fresh database behind ``AIRFLOW_CONN_WAREHOUSE_DEFAULT``.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from bench.common import BUCKET, Stopwatch, pipeline, s3_client
from bench.data import iter_chunks

CONN_ID = "warehouse_default"
RUN_ID = "bench__2026-01-15"
ERROR_EVERY = 100
JOB_ARN_PREFIX = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/"
PART_SIZE = 8 * 1024 * 1024
SUMMARY = (
    "Reason for call: the customer was charged twice for the monthly subscription. What happened: "
    "the agent confirmed the duplicate charge, refunded it and explained the timing of the refund. "
    "Outcome: resolved; the refund reaches the card in three to five business days. Follow-up: none. "
    "Customer sentiment: positive."
)


class _MultipartWriter:
    """Writes one object in 8 MiB parts (keeps the set-up itself flat in memory)."""

    def __init__(self, s3: Any, key: str) -> None:
        self.s3, self.key = s3, key
        self.upload_id = s3.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
        self.parts: list[dict[str, Any]] = []
        self.buffer = bytearray()

    def write(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) >= PART_SIZE:
            self._flush()

    def _flush(self) -> None:
        number = len(self.parts) + 1
        response = self.s3.upload_part(
            Bucket=BUCKET, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=bytes(self.buffer)
        )
        self.parts.append({"ETag": response["ETag"], "PartNumber": number})
        self.buffer = bytearray()

    def close(self) -> None:
        if self.buffer or not self.parts:
            self._flush()
        self.s3.complete_multipart_upload(
            Bucket=BUCKET, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": self.parts}
        )


def _job_id(index: int) -> str:
    return base64.b32encode(hashlib.blake2b(f"job{index}".encode(), digest_size=5).digest()).decode().lower()


def setup(size: int) -> dict[str, Any]:
    """Write ``size`` records of output as the jobs the stager would have planned; return the jobs."""
    import orjson

    from bedrock_batch.quotas import plan_job_sizes
    from bedrock_batch.records import record_id_for
    from bedrock_batch.staging import MAP_BLOCK
    from bench.baselines import naive_model_input

    p = pipeline()
    s3 = s3_client()
    prefix = f"load/{size}"
    sizes = iter(plan_job_sizes(size, p.quotas))
    jobs: list[dict[str, Any]] = []
    state: dict[str, Any] = {}

    def open_job() -> None:
        index = len(jobs) + 1
        name = f"bench-load-j{index:03d}"
        job_id = _job_id(index)
        state.update(
            target=next(sizes),
            written=0,
            errors=0,
            name=name,
            job_id=job_id,
            data=_MultipartWriter(s3, f"{prefix}/out/{name}/{job_id}/part-00001.jsonl.out"),
            map=_MultipartWriter(s3, f"{prefix}/maps/{name}.jsonl"),
            map_block=[],
        )

    def write_map_block() -> None:
        if state["map_block"]:
            state["map"].write(orjson.dumps(state["map_block"], option=orjson.OPT_APPEND_NEWLINE))
            state["map_block"] = []

    def close_job() -> None:
        write_map_block()
        state["data"].close()
        state["map"].close()
        written, errors = state["written"], state["errors"]
        manifest = {
            "totalRecordCount": written,
            "processedRecordCount": written,
            "successRecordCount": written - errors,
            "errorRecordCount": errors,
        }
        key = f"{prefix}/out/{state['name']}/{state['job_id']}/manifest.json.out"
        s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode())
        jobs.append(
            {
                "job": {
                    "index": len(jobs) + 1,
                    "job_name": state["name"],
                    "input_s3_uri": f"s3://{BUCKET}/{prefix}/in/{state['name']}/",
                    "output_s3_uri": f"s3://{BUCKET}/{prefix}/out/{state['name']}/",
                    "map_s3_uri": f"s3://{BUCKET}/{prefix}/maps/{state['name']}.jsonl",
                    "files": [],
                    "records": written,
                    "bytes": 0,
                    "est_input_tokens": 0,
                },
                "job_info": {
                    "jobArn": f"{JOB_ARN_PREFIX}{state['job_id']}",
                    "status": "Completed",
                },
                "errors": errors,
            }
        )
        state.clear()

    open_job()
    for chunk in iter_chunks(size):
        for row in chunk:
            if state["written"] >= state["target"]:
                close_job()
                open_job()
            record_id = record_id_for(row["source_key"])
            index = int(row["source_key"].rsplit("-", 1)[-1])
            line: dict[str, Any] = {
                "recordId": record_id,
                "modelInput": naive_model_input(
                    p.prompt.system, p.prompt.user, row["text"], p.config.model.params
                ),
            }
            if index % ERROR_EVERY == ERROR_EVERY - 1:
                line["error"] = {"errorCode": 500, "errorMessage": "Internal server error"}
                state["errors"] += 1
            else:
                line["modelOutput"] = {
                    "id": f"msg_bdrk_{record_id}",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-3-5-haiku-20241022",
                    "content": [{"type": "text", "text": SUMMARY}],
                    "stop_reason": "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": 700 + index % 300, "output_tokens": 80 + index % 40},
                }
            state["data"].write(orjson.dumps(line) + b"\n")
            state["map_block"].append((record_id, row["source_key"], 1))
            if len(state["map_block"]) >= MAP_BLOCK:
                write_map_block()
            state["written"] += 1
    close_job()
    return {"jobs": jobs, "records": size, "errors": sum(job["errors"] for job in jobs)}


def _warehouse() -> Any:
    from bedrock_batch.warehouse import Warehouse

    config = pipeline().config
    warehouse = Warehouse(CONN_ID, config.warehouse.tables(), pipeline=config.name)
    warehouse.ensure_schema()
    return warehouse


def _summaries(warehouse: Any) -> int:
    with warehouse._read_cursor(server_side=False) as cur:
        cur.execute(f"SELECT COUNT(*) FROM {warehouse.tables.output_table}")
        return int(cur.fetchone()[0])


def project(size: int, *, jobs_file: str) -> dict[str, Any]:
    """collect.collect_job per job: streamed lines, record map join, COPY + upsert / executemany."""
    from bedrock_batch.collect import collect_job
    from bedrock_batch.staging import StagedJob

    p = pipeline()
    plan = json.loads(Path(jobs_file).read_text())
    s3 = s3_client()
    warehouse = _warehouse()
    watch = Stopwatch()
    with watch:
        outcomes = [
            collect_job(
                s3=s3,
                warehouse=warehouse,
                job=StagedJob.from_dict(job["job"]),
                job_info=job["job_info"],
                family=p.family,
                run_id=RUN_ID,
                prompt_version=p.prompt.version,
                model_id=p.config.model.id,
                max_attempts=p.config.max_attempts,
                owner={},
            )
            for job in plan["jobs"]
        ]
    loaded = _summaries(warehouse)
    expected = plan["records"] - plan["errors"]
    if loaded != expected or sum(o.summarized for o in outcomes) != expected:
        raise RuntimeError(f"loaded {loaded} summaries, expected {expected}")
    return {"records": plan["records"], "rows": loaded, "seconds": watch.seconds}


def baseline(size: int, *, jobs_file: str) -> dict[str, Any]:
    """json.loads per line of whole objects, then DbApiHook.insert_rows (replace=True) per job."""
    from bench.baselines import naive_load

    p = pipeline()
    plan = json.loads(Path(jobs_file).read_text())
    s3 = s3_client()
    warehouse = _warehouse()
    hook = warehouse.hook
    watch = Stopwatch()
    with watch:
        for job in plan["jobs"]:
            out_prefix = job["job"]["output_s3_uri"].split("/", 3)[3]
            keys = [
                item["Key"]
                for item in s3.list_objects_v2(Bucket=BUCKET, Prefix=out_prefix).get("Contents", [])
                if item["Key"].endswith(".jsonl.out")
            ]
            naive_load(
                s3,
                hook,
                bucket=BUCKET,
                output_keys=keys,
                map_key=job["job"]["map_s3_uri"].split("/", 3)[3],
                table=warehouse.tables.output_table,
                dialect=warehouse.dialect,
                prompt_version=p.prompt.version,
                model_id=p.config.model.id,
                run_id=RUN_ID,
                job_arn=job["job_info"]["jobArn"],
            )
    loaded = _summaries(warehouse)
    expected = plan["records"] - plan["errors"]
    if loaded != expected:
        raise RuntimeError(f"baseline loaded {loaded} summaries, expected {expected}")
    return {"records": plan["records"], "rows": loaded, "seconds": watch.seconds}
