"""Reads and checks a job's input the way the service's Validating step does.

``s3Uri`` names one ``.jsonl`` object or a folder whose ``.jsonl`` objects are all read. Any quota
breach, unreadable line or S3 reference outside the input folder fails the whole job.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from local_aws.quotas import Quotas
from local_aws.s3io import S3Missing, list_objects, object_size, read, split_uri


class InputError(Exception):
    """The input breaks a rule of the service; the message becomes the job's failure message."""


@dataclass
class RecordLine:
    file_name: str
    record_id: str
    model_input: Any


@dataclass
class JobInput:
    folder_uri: str
    file_names: list[str] = field(default_factory=list)
    records: list[RecordLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.records)


def _files(uri: str) -> tuple[str, str, list[tuple[str, int]], bool]:
    """(bucket, folder prefix, [(key, size)], single_file) for an input s3Uri."""
    bucket, path = split_uri(uri)
    if path.endswith(".jsonl"):
        size = object_size(bucket, path)
        if size is not None:
            return bucket, path.rsplit("/", 1)[0] + "/" if "/" in path else "", [(path, size)], True
    prefix = path.rstrip("/") + "/" if path.strip("/") else ""
    files = [(k, s) for k, s in list_objects(bucket, prefix) if k.endswith(".jsonl")]
    return bucket, prefix, files, False


def _s3_refs(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        location = value.get("s3Location")
        if isinstance(location, dict) and isinstance(location.get("uri"), str):
            yield location["uri"]
        for item in value.values():
            yield from _s3_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _s3_refs(item)


def read_input(uri: str, quotas: Quotas) -> JobInput:
    """Every record of the job's input, checked against ``quotas``; InputError on the first breach."""
    try:
        bucket, prefix, files, single = _files(uri)
    except S3Missing as err:
        raise InputError(f"Unable to read the input data at {uri}: {err}") from err
    if not files:
        raise InputError(f"No .jsonl input files were found at {uri}.")
    folder = f"s3://{bucket}/{prefix}"
    job_bytes = sum(size for _, size in files)
    if job_bytes > quotas.max_job_bytes:
        raise InputError(
            f"The input files total {job_bytes} bytes, more than the job size quota of "
            f"{quotas.max_job_bytes} bytes."
        )
    job_input = JobInput(folder)
    for key, size in files:
        name = key[len(prefix) :]
        if size > quotas.max_file_bytes:
            raise InputError(
                f"The input file {name} is {size} bytes, more than the file size quota of "
                f"{quotas.max_file_bytes} bytes."
            )
        job_input.file_names.append(name)
        count = 0
        for line_no, raw in enumerate(read(bucket, key).splitlines(), start=1):
            if not raw.strip():
                continue
            count += 1
            job_input.records.append(_parse_line(raw, name, line_no, folder, single))
        if count > quotas.max_records_per_file:
            raise InputError(
                f"The input file {name} has {count} records, more than the quota of "
                f"{quotas.max_records_per_file} records per file."
            )
    total = job_input.total
    if total > quotas.max_records_per_job:
        raise InputError(
            f"The job has {total} records, more than the quota of {quotas.max_records_per_job} "
            "records per job."
        )
    if total < quotas.min_records_per_job:
        raise InputError(
            f"The job has {total} records, fewer than the minimum of "
            f"{quotas.min_records_per_job} records per batch inference job."
        )
    return job_input


def _parse_line(raw: bytes, name: str, line_no: int, folder: str, single: bool) -> RecordLine:
    try:
        line = json.loads(raw)
    except ValueError as err:
        raise InputError(f"The input file {name} has invalid JSON at line {line_no}.") from err
    if not isinstance(line, dict) or "modelInput" not in line:
        raise InputError(f"The record at line {line_no} of input file {name} has no modelInput.")
    for ref in _s3_refs(line["modelInput"]):
        if single or not ref.startswith(folder):
            raise InputError(
                f"The record at line {line_no} of input file {name} references {ref}, which is not in the "
                f"input folder {folder}; referenced objects must be in the folder the s3Uri names."
            )
    record_id = line.get("recordId")
    if not isinstance(record_id, str) or not record_id:
        record_id = hashlib.blake2b(f"{name}:{line_no}".encode(), digest_size=8).hexdigest()[:11].upper()
    return RecordLine(name, record_id, line["modelInput"])
