"""Stream batch records to S3 as Bedrock batch input: JSONL files, one folder per job, plus record maps.

Memory stays flat in the number of records: each open object (one input file and one map file
of the current job) buffers one multipart part while a few more are on their way to S3, and only
the record ids of the current job are held, to catch duplicate ids. Parts are sent by upload threads
(two by default), and objects completed by two more, while the caller builds the next records;
every body carries a CRC32 checksum S3 verifies. Records from ``records.RecordBuilder`` arrive
already serialised.
Re-staging the same run writes the same keys and deletes ``.jsonl`` objects of an earlier staging
that the new plan no longer has, so a rerun never leaves stale input behind for Bedrock to read.

Multimodal records: Bedrock requires every S3 object a record references
(``{"s3Location": {"uri": ...}}``) to sit in the job's input folder. Callers must copy media to
``JsonlStager.job_input_prefix(index)`` first; a record referencing anything else is rejected.
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import orjson

from bedrock_batch.config import DEFAULT_UPLOAD_THREADS, MAX_UPLOAD_THREADS
from bedrock_batch.errors import ConfigError, StagingError
from bedrock_batch.quotas import BatchQuotas, balanced_sizes

log = logging.getLogger(__name__)

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
"""S3's smallest multipart part (all parts but the last)."""
UPLOAD_SWITCH_INTERVAL_S = 0.0005
"""The thread switch interval while parts are being uploaded (see ``JsonlStager.uploader``)."""
MAX_OBJECTS_FINISHING = 4
"""Closed objects whose last parts and completion may still be under way."""
FINISHING_THREADS = 2
"""Threads that finish closed objects (see ``JsonlStager.uploader``): a job's input file and its map."""
CHECKSUM_ALGORITHM = "CRC32"
"""Sent with every body: S3 verifies it on receipt (cheaper than Content-MD5, and the same over HTTPS)."""
CHECKSUM_FIELD = "ChecksumCRC32"
MAX_PARTS_IN_FLIGHT = 3
"""Parts of one object handed to the upload threads and not yet sent, at least (one more than the
upload threads when there are more): bounds its memory at that plus the part being filled (plus
``SPARE_PARTS`` sent buffers per stager)."""
PART_SLACK = 64 * 1024
"""Room past ``part_size`` in a part's buffer: the line that fills a part usually fits in it."""
SPARE_PARTS = 2
"""Sent part buffers kept for re-use (see ``JsonlStager.spare_parts``)."""
MAP_BLOCK = 1000
"""Record map entries per map line (see :func:`iter_record_map` for the format)."""
JOB_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}$")
RECORD_ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,256}$")


class StageableRecord(Protocol):
    """What the stager reads of a record (``records.BatchRecord`` has these fields).

    A record may also carry ``line``: its JSONL line as ``records.RecordBuilder`` wrote it, which
    the stager then sends as is (after checking it is that record's line) instead of serialising.
    """

    @property
    def record_id(self) -> str: ...
    @property
    def source_key(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def model_input(self) -> Mapping[str, Any]: ...
    @property
    def est_input_tokens(self) -> int: ...


class DuplicateRecordIdError(StagingError):
    """Two records of one job have the same record id; the caller rejects the second one."""

    def __init__(self, record_id: str, source_key: str, job_name: str) -> None:
        super().__init__(
            f"record {record_id} (source key {source_key!r}) duplicates a record id in job {job_name}"
        )
        self.record_id = record_id
        self.source_key = source_key
        self.job_name = job_name


@dataclass(frozen=True)
class StagedFile:
    s3_uri: str
    records: int
    bytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"s3_uri": self.s3_uri, "records": self.records, "bytes": self.bytes}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StagedFile:
        return cls(s3_uri=str(data["s3_uri"]), records=int(data["records"]), bytes=int(data["bytes"]))


@dataclass(frozen=True)
class StagedJob:
    index: int
    job_name: str
    input_s3_uri: str
    output_s3_uri: str
    map_s3_uri: str
    files: list[StagedFile]
    records: int
    bytes: int
    est_input_tokens: int
    generation: int = 0
    """Jobs of this name earlier tries of the run submitted that have ended (or are stopping)."""
    prompt_version: str | None = None
    """The prompt version its records were built with: its submit tags the job with it."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "job_name": self.job_name,
            "input_s3_uri": self.input_s3_uri,
            "output_s3_uri": self.output_s3_uri,
            "map_s3_uri": self.map_s3_uri,
            "files": [f.to_dict() for f in self.files],
            "records": self.records,
            "bytes": self.bytes,
            "est_input_tokens": self.est_input_tokens,
            "generation": self.generation,
            "prompt_version": self.prompt_version,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StagedJob:
        return cls(
            index=int(data["index"]),
            job_name=str(data["job_name"]),
            input_s3_uri=str(data["input_s3_uri"]),
            output_s3_uri=str(data["output_s3_uri"]),
            map_s3_uri=str(data["map_s3_uri"]),
            files=[StagedFile.from_dict(f) for f in data["files"]],
            records=int(data["records"]),
            bytes=int(data["bytes"]),
            est_input_tokens=int(data["est_input_tokens"]),
            generation=int(data.get("generation") or 0),
            prompt_version=data.get("prompt_version"),
        )


@dataclass(frozen=True)
class StagePlan:
    """What was staged: small enough for XCom (URIs and counts, never record payloads)."""

    bucket: str
    prefix: str
    jobs: list[StagedJob] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(job.records for job in self.jobs)

    @property
    def bytes(self) -> int:
        return sum(job.bytes for job in self.jobs)

    def to_dict(self) -> dict[str, Any]:
        return {"bucket": self.bucket, "prefix": self.prefix, "jobs": [job.to_dict() for job in self.jobs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StagePlan:
        return cls(
            bucket=str(data["bucket"]),
            prefix=str(data["prefix"]),
            jobs=[StagedJob.from_dict(job) for job in data["jobs"]],
        )


def iter_s3_uris(value: Any) -> Iterator[str]:
    """Every ``{"s3Location": {"uri": ...}}`` uri anywhere in a JSON value (iterative, any depth)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            location = item.get("s3Location")
            if isinstance(location, Mapping) and "uri" in location:
                yield str(location["uri"])
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


class _S3StreamWriter:
    """One S3 object written in parts: one put_object when small, multipart once a part is full.

    Every body goes with a CRC32 checksum (``ChecksumAlgorithm``) that S3 verifies before it accepts
    the write, so a corrupted upload fails there; closing then checks the object's size and ETag.
    """

    def __init__(self, stager: JsonlStager, key: str) -> None:
        self._stager = stager
        self.key = key
        self.records = 0
        self.bytes = 0
        # The part being filled is self._buffer[:self._filled]. Once an object has handed a part to the
        # upload threads, each next part's first line takes a full-size buffer (a sent part's, else a
        # new one of self._room) and lines are copied into it: appending to a growing bytearray
        # reallocated (and so copied) each part several times over.
        self._buffer = bytearray()
        self._filled = 0
        self._room = 0
        # The multipart upload, created on an upload thread: its parts wait for it there, not the builder.
        self._upload: Future[str] | None = None
        self._parts: list[dict[str, Any]] = []
        self._in_flight: deque[Future[dict[str, Any]]] = deque()

    def write(self, line: bytes) -> None:
        size = len(line)
        start = self._filled
        end = start + size
        buffer = self._buffer
        if end <= len(buffer):
            buffer[start:end] = line
        elif start == 0 and size < self._room:
            self._buffer = buffer = self._new_part_buffer()
            buffer[:size] = line
        else:
            del buffer[start:]
            buffer += line
        self._filled = end
        self.records += 1
        self.bytes += size
        if end >= self._stager.part_size:
            self._flush_part()

    def _new_part_buffer(self) -> bytearray:
        """A buffer of at least ``part_size`` to fill: a sent part's, else a new one with room to spare."""
        spare = self._stager.spare_parts  # popped only here, on the caller's thread
        while spare:
            buffer = spare.pop()
            if len(buffer) >= self._stager.part_size:
                return buffer
        return bytearray(self._room)

    def _take_part(self) -> bytearray:
        """The buffered bytes, handed over uncopied; the writer starts an empty buffer."""
        body = self._buffer
        del body[self._filled :]
        self._reset_buffer()
        return body

    def _reset_buffer(self) -> None:
        """Drop the buffer without touching it (a part handed over may still be read)."""
        self._buffer = bytearray()
        self._filled = 0

    def _flush_part(self, *, last: bool = False) -> None:
        """Hand the buffer to the stager's upload threads; wait only when too many parts are in flight."""
        uploader = self._stager.uploader()
        if self._upload is None:  # queued first, so a part waiting for it never waits on a queued task
            self._upload = uploader.submit(self._create_upload)
        body = self._take_part()
        self._room = 0 if last else self._stager.part_size + PART_SLACK
        number = len(self._parts) + len(self._in_flight) + 1
        upload = uploader.submit(self._upload_part, self._upload, number, body)
        self._in_flight.append(upload)
        while len(self._in_flight) > self._stager.max_parts_in_flight:
            self._collect_part()

    def _create_upload(self) -> str:
        """Start the multipart upload (on an upload thread): a round trip the builder need not wait for."""
        stager = self._stager
        response = stager.s3.create_multipart_upload(
            Bucket=stager.bucket,
            Key=self.key,
            ContentType="application/jsonl",
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            **stager.put_kwargs,
        )
        upload_id = str(response["UploadId"])
        stager.open_uploads[self.key] = upload_id
        return upload_id

    def _upload_part(self, upload: Future[str], number: int, body: bytearray) -> dict[str, Any]:
        response = self._stager.s3.upload_part(
            Bucket=self._stager.bucket,
            Key=self.key,
            UploadId=upload.result(),
            PartNumber=number,
            Body=body,
            ChecksumAlgorithm=CHECKSUM_ALGORITHM,
            **self._stager.owner_kwargs,
        )
        if self._stager.part_size <= len(body) <= 2 * self._stager.part_size:  # not one huge line's
            self._stager.spare_parts.append(body)  # a full part, sent: its buffer may be filled again
        part = {"ETag": response["ETag"], "PartNumber": number}
        if response.get(CHECKSUM_FIELD):
            part[CHECKSUM_FIELD] = response[CHECKSUM_FIELD]
        return part

    def _collect_part(self) -> None:
        """Wait for the oldest part in flight, so the part list stays in part-number order."""
        self._parts.append(self._in_flight.popleft().result())

    def seal(self) -> None:
        """No more lines: queue the last part. Called on the caller's thread, never the uploader's."""
        if self._upload is not None and self._filled:
            self._flush_part(last=True)

    def complete(self) -> None:
        """Finish a sealed object and check S3 holds as many bytes as were written, under the ETag it gave.

        Runs on a finishing thread: it waits for the object's parts, which the upload threads send.
        """
        stager = self._stager
        if self._upload is None:
            response = stager.s3.put_object(
                Bucket=stager.bucket,
                Key=self.key,
                Body=self._take_part(),
                ContentType="application/jsonl",
                ChecksumAlgorithm=CHECKSUM_ALGORITHM,
                **stager.put_kwargs,
            )
        else:
            while self._in_flight:
                self._collect_part()
            response = stager.s3.complete_multipart_upload(
                Bucket=stager.bucket,
                Key=self.key,
                UploadId=self._upload.result(),
                MultipartUpload={"Parts": self._parts},
                **stager.owner_kwargs,
            )
            stager.open_uploads.pop(self.key, None)
        self._reset_buffer()
        self._verify(response.get("ETag"))

    def _verify(self, etag: str | None) -> None:
        stager = self._stager
        head = stager.s3.head_object(Bucket=stager.bucket, Key=self.key, **stager.owner_kwargs)
        where = f"s3://{stager.bucket}/{self.key}"
        if int(head["ContentLength"]) != self.bytes:
            raise StagingError(f"{where} holds {head['ContentLength']} bytes, {self.bytes} were written")
        head_etag = str(head.get("ETag", "")).strip('"')
        if etag is not None and head_etag != str(etag).strip('"'):
            raise StagingError(f"{where} changed while staging: ETag {head_etag} after writing {etag}")

    def abort(self) -> None:
        for part in self._in_flight:
            part.cancel()  # a part no thread has taken yet is not sent
        while self._in_flight:  # let the parts being sent finish (or fail) before the upload is aborted
            with contextlib.suppress(Exception):  # CancelledError included
                self._in_flight.popleft().result()
        upload, self._upload = self._upload, None
        if upload is not None:
            upload.cancel()  # a create no thread has taken yet (then none of its parts was taken either)
            if not upload.cancelled() and upload.exception() is None:  # a failed create: nothing to abort
                self._stager.abort_upload(self.key, upload.result())
        self._reset_buffer()


@dataclass
class _OpenJob:
    index: int
    job_name: str
    target: int
    records: int = 0
    bytes: int = 0
    est_input_tokens: int = 0
    files: list[StagedFile] = field(default_factory=list)
    record_ids: set[str] = field(default_factory=set)
    data: _S3StreamWriter | None = None
    map: _S3StreamWriter | None = None
    map_block: list[tuple[str, str, int]] = field(default_factory=list)


class JsonlStager:
    """Streams records into ``{prefix}/jobs/{job_name}/part-NNNNN.jsonl``, maps into ``{prefix}/maps/``.

    ``job_sizes`` (from ``quotas.plan_job_sizes``) says how many records each job takes, in the
    order they are added. Files roll at ``max_records_per_file`` / ``max_file_bytes``; a job ends
    early at ``max_job_bytes`` and its unplaced records are spread over the following jobs.
    Use as a context manager: an exception aborts open multipart uploads, a clean exit closes.
    """

    def __init__(
        self,
        s3_client: Any,
        *,
        bucket: str,
        prefix: str,
        job_sizes: list[int],
        quotas: BatchQuotas,
        job_name_prefix: str,
        output_bucket: str,
        output_prefix: str,
        kms_key_id: str | None = None,
        expected_bucket_owner: str | None = None,
        part_size: int = 8 * MIB,
        upload_threads: int = DEFAULT_UPLOAD_THREADS,
    ) -> None:
        if part_size < MIN_PART_SIZE:
            raise ConfigError(f"part_size {part_size} is below S3's minimum part size of {MIN_PART_SIZE}")
        if not 1 <= upload_threads <= MAX_UPLOAD_THREADS:
            raise ConfigError(
                f"staging.upload_threads must be 1 to {MAX_UPLOAD_THREADS}, got {upload_threads}"
            )
        if any(size <= 0 for size in job_sizes):
            raise ConfigError(f"job_sizes must be positive record counts, got {job_sizes}")
        if not JOB_NAME_PATTERN.match(self._job_name(job_name_prefix, 999)):
            raise ConfigError(f"job_name_prefix {job_name_prefix!r} does not give valid Bedrock job names")
        self.s3 = s3_client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.quotas = quotas
        self._line_limit = min(quotas.max_file_bytes, quotas.max_job_bytes)
        self.job_name_prefix = job_name_prefix
        self.output_bucket = output_bucket
        self.output_prefix = output_prefix.strip("/")
        self.kms_key_id = kms_key_id
        self.part_size = part_size
        self.upload_threads = upload_threads
        self.max_parts_in_flight = max(MAX_PARTS_IN_FLIGHT, upload_threads + 1)
        self.owner_kwargs: dict[str, str] = (
            {"ExpectedBucketOwner": expected_bucket_owner} if expected_bucket_owner else {}
        )
        self.put_kwargs: dict[str, str] = dict(self.owner_kwargs)
        if kms_key_id:
            self.put_kwargs.update(ServerSideEncryption="aws:kms", SSEKMSKeyId=kms_key_id)
        self.open_uploads: dict[str, str] = {}
        self._uploader: ThreadPoolExecutor | None = None
        self._finisher: ThreadPoolExecutor | None = None
        self._finishing: deque[Future[None]] = deque()
        self._earlier_objects: Future[list[str]] | None = None
        # Part buffers the upload threads have sent, for the next parts to fill again: a fresh 8 MiB
        # buffer costs ~1 ms of page faults the first few times (appends and pops are thread-safe).
        self.spare_parts: deque[bytearray] = deque(maxlen=SPARE_PARTS)
        self._switch_interval: float | None = None
        self._pending: deque[int] = deque(job_sizes)
        self._job: _OpenJob | None = None
        self._done: list[StagedJob] = []
        self._next_index = 1
        self._closed = False
        self.plan: StagePlan | None = None

    # -- layout -----------------------------------------------------------------------------------

    @staticmethod
    def _job_name(job_name_prefix: str, index: int) -> str:
        return f"{job_name_prefix}-j{index:03d}"

    def job_name(self, index: int) -> str:
        return self._job_name(self.job_name_prefix, index)

    def job_input_prefix(self, index: int) -> str:
        """The key prefix (folder) of job ``index``: its input files and any media its records use."""
        return f"{self.prefix}/jobs/{self.job_name(index)}/"

    def _map_key(self, job_name: str) -> str:
        return f"{self.prefix}/maps/{job_name}.jsonl"

    # -- writing ----------------------------------------------------------------------------------

    def __enter__(self) -> JsonlStager:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._closed:
            self.close()

    def add(self, record: StageableRecord) -> None:
        """Append one record to the current job (serialised once, checked, then buffered)."""
        if self._closed:
            raise StagingError(f"record {record.record_id}: the stager is already closed")
        record_id = record.record_id
        line, prebuilt = self._serialise(record)
        job = self._job_for(self._checked_size(record_id, line))
        # The record builder writes text prompts only; other records are searched for media references.
        if not prebuilt and b'"s3Location"' in line:
            self._check_s3_references(record, job)
        if record_id in job.record_ids:
            raise DuplicateRecordIdError(record_id, record.source_key, job.job_name)
        job.record_ids.add(record_id)
        self.add_line(record_id, record.source_key, record.attempt, line, int(record.est_input_tokens))

    def add_line(
        self, record_id: str, source_key: str, attempt: int, line: bytes, est_input_tokens: int
    ) -> None:
        """
        Append a record's JSONL line as the run's ``records.RecordBuilder`` wrote it: the hot path.

        The builder's lines are trusted to be one JSON object of ``record_id`` with an alphanumeric
        id, and its record ids to be unique in the run (it rejects a second row of a key or id), so
        none of :meth:`add`'s checks is repeated here; only the quotas are.
        """
        if self._closed:
            raise StagingError(f"record {record_id}: the stager is already closed")
        size = len(line)
        if size > self._line_limit:
            self._checked_size(record_id, line)  # raises, naming the record
        job = self._job
        if job is None or job.records >= job.target or job.bytes + size > self.quotas.max_job_bytes:
            job = self._job_for(size)
        quotas = self.quotas
        data = job.data
        if data is not None and (
            data.records >= quotas.max_records_per_file or data.bytes + size > quotas.max_file_bytes
        ):
            self._close_file(job)
            data = None
        if data is None:
            data = job.data = _S3StreamWriter(
                self, f"{self.prefix}/jobs/{job.job_name}/part-{len(job.files) + 1:05d}.jsonl"
            )
        data.write(line)
        block = job.map_block
        block.append((record_id, source_key, attempt))
        if len(block) >= MAP_BLOCK:
            self._write_map_block(job)
        job.records += 1
        job.bytes += size
        job.est_input_tokens += est_input_tokens

    def _write_map_block(self, job: _OpenJob) -> None:
        """Write the job's buffered map entries as one map line."""
        block = job.map_block
        if not block:
            return
        if job.map is None:
            job.map = _S3StreamWriter(self, self._map_key(job.job_name))
        job.map.write(orjson.dumps(block, option=orjson.OPT_APPEND_NEWLINE))
        job.map_block = []

    def _checked_size(self, record_id: str, line: bytes) -> int:
        size = len(line)
        if size > self._line_limit:
            raise StagingError(
                f"record {record_id} is {size} bytes as a JSONL line, over the "
                f"{self._line_limit}-byte file/job limit (quotas max_file_bytes / max_job_bytes)"
            )
        return size

    def _serialise(self, record: StageableRecord) -> tuple[bytes, bool]:
        """The record's JSONL line, and whether the record builder made it."""
        record_id = record.record_id
        if not RECORD_ID_PATTERN.match(record_id or ""):
            raise StagingError(
                f"record id {record_id!r} (source key {record.source_key!r}) is not alphanumeric"
            )
        line = getattr(record, "line", None)
        if line is not None:
            # Written by the record builder with orjson, which cannot write invalid JSON or a raw
            # newline: check that it is this record's line instead of parsing it again.
            if line.startswith(b'{"recordId":"%s","modelInput":{' % record_id.encode()) and line.endswith(
                b"}}\n"
            ):
                return line, True
            raise StagingError(f"record {record_id}: its prebuilt line is not one JSONL line of this record")
        if not isinstance(record.model_input, Mapping):
            raise StagingError(f"record {record_id}: modelInput must be a JSON object")
        try:
            line = orjson.dumps({"recordId": record_id, "modelInput": record.model_input}) + b"\n"
            parsed = orjson.loads(line)
        except (TypeError, orjson.JSONDecodeError) as err:
            raise StagingError(f"record {record_id}: modelInput is not valid JSON ({err})") from err
        if parsed.get("recordId") != record_id or line.count(b"\n") != 1:
            raise StagingError(f"record {record_id} does not serialise to one JSONL line")
        return line, False

    def _check_s3_references(self, record: StageableRecord, job: _OpenJob) -> None:
        folder = f"s3://{self.bucket}/{self.prefix}/jobs/{job.job_name}/"
        for uri in iter_s3_uris(record.model_input):
            if not uri.startswith(folder):
                raise StagingError(
                    f"record {record.record_id} references {uri}; Bedrock reads media only from the "
                    f"job's input folder {folder} (copy it there before staging)"
                )

    def _job_for(self, size: int) -> _OpenJob:
        job = self._job
        if job is not None and job.records >= job.target:
            self._close_job()
            job = None
        elif job is not None and job.bytes + size > self.quotas.max_job_bytes:
            self._reflow(job.target - job.records)
            self._close_job()
            job = None
        if job is None:
            if not self._pending:
                raise StagingError(
                    f"more records than planned ({sum(j.records for j in self._done)} in "
                    f"{len(self._done)} jobs); plan job_sizes from the final record count"
                )
            index = self._next_index
            self._next_index += 1
            job = self._job = _OpenJob(
                index=index, job_name=self.job_name(index), target=self._pending.popleft()
            )
        return job

    def _reflow(self, unplaced: int) -> None:
        """A job ended early on bytes: spread its unplaced records over the remaining jobs."""
        remaining = unplaced + sum(self._pending)
        jobs = max(len(self._pending), -(-remaining // self.quotas.max_records_per_job))
        self._pending = deque(balanced_sizes(remaining, jobs))
        log.info("Job reached max_job_bytes early; remaining job sizes now %s", list(self._pending))

    def _close_file(self, job: _OpenJob) -> None:
        data = job.data
        if data is None:
            return
        job.data = None  # from here the stager's threads own it: an abort must not touch its buffer
        self._finish(data)
        job.files.append(StagedFile(f"s3://{self.bucket}/{data.key}", data.records, data.bytes))

    def _finish(self, writer: _S3StreamWriter) -> None:
        """Complete ``writer``'s object on a finishing thread, so building the next file goes on meanwhile.

        Failures surface at the latest when the stager closes; at most ``MAX_OBJECTS_FINISHING`` wait.
        """
        writer.seal()
        self.uploader()
        assert self._finisher is not None  # started with the upload threads
        self._finishing.append(self._finisher.submit(writer.complete))
        while self._finishing and (self._finishing[0].done() or len(self._finishing) > MAX_OBJECTS_FINISHING):
            self._finishing.popleft().result()

    def _wait_finished(self) -> None:
        while self._finishing:
            self._finishing.popleft().result()

    def _close_job(self) -> None:
        job = self._job
        if job is None:
            return
        self._job = None
        if job.records == 0:  # opened for a record that was then refused: give its slot back
            self._pending.appendleft(job.target)
            self._next_index = job.index
            return
        self._close_file(job)
        self._write_map_block(job)
        map_writer, job.map = job.map, None  # the stager's threads own it now (see _close_file)
        if map_writer is not None:
            self._finish(map_writer)
        if sum(f.records for f in job.files) != job.records or sum(f.bytes for f in job.files) != job.bytes:
            raise StagingError(f"files of job {job.job_name} do not add up to its {job.records} records")
        if job.records < self.quotas.min_records_per_job:
            log.warning(
                "Job %s has %d records, under the minimum of %d",
                job.job_name,
                job.records,
                self.quotas.min_records_per_job,
            )
        self._done.append(
            StagedJob(
                index=job.index,
                job_name=job.job_name,
                input_s3_uri=f"s3://{self.bucket}/{self.prefix}/jobs/{job.job_name}/",
                output_s3_uri=f"s3://{self.output_bucket}/{self.output_prefix}/{job.job_name}/",
                map_s3_uri=f"s3://{self.bucket}/{self._map_key(job.job_name)}",
                files=list(job.files),
                records=job.records,
                bytes=job.bytes,
                est_input_tokens=job.est_input_tokens,
            )
        )
        log.info(
            "Staged job %s: %d records, %d bytes, %d files",
            job.job_name,
            job.records,
            job.bytes,
            len(job.files),
        )

    def close(self) -> StagePlan:
        """Finish every object, delete stale input of an earlier staging, and return the plan."""
        if self._closed:
            if self.plan is None:
                raise StagingError("the stager was aborted")
            return self.plan
        try:
            self._close_job()
            self._wait_finished()
            self._delete_stale()
        except BaseException:
            self.abort()
            raise
        self._stop_uploader()
        self.spare_parts.clear()
        self._closed = True
        self.plan = StagePlan(bucket=self.bucket, prefix=self.prefix, jobs=list(self._done))
        return self.plan

    def _delete_stale(self) -> None:
        keep = {f.s3_uri for job in self._done for f in job.files}
        keep |= {job.map_s3_uri for job in self._done}
        earlier = self._earlier_objects.result() if self._earlier_objects is not None else self._list_ours()
        stale = [key for key in earlier if f"s3://{self.bucket}/{key}" not in keep]
        for start in range(0, len(stale), 1000):
            batch = stale[start : start + 1000]
            response = self.s3.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True},
                **self.owner_kwargs,
            )
            if response.get("Errors"):
                raise StagingError(f"could not delete stale input {response['Errors'][0].get('Key')}")
        if stale:
            log.info(
                "Deleted %d stale .jsonl objects of an earlier staging under %s", len(stale), self.prefix
            )

    def _list_ours(self) -> list[str]:
        """The input and map objects under the prefix named like this stager's jobs (an earlier staging's).

        Only this stager's job names: another stager of the run (other job_name_prefix) is left alone.
        """
        ours = re.compile(
            rf"^{re.escape(self.prefix)}/(jobs/{re.escape(self.job_name_prefix)}-j\d+/.*"
            rf"|maps/{re.escape(self.job_name_prefix)}-j\d+)\.jsonl$"
        )
        from bedrock_batch.s3paths import list_keys

        return [
            key
            for folder in ("jobs", "maps")
            for key in list_keys(
                self.s3,
                self.bucket,
                f"{self.prefix}/{folder}/{self.job_name_prefix}-j",
                owner=self.owner_kwargs,
            )
            if ours.match(key)
        ]

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.s3.abort_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id, **self.owner_kwargs
            )
        except Exception as err:  # aborting is best effort; a lifecycle rule cleans up the rest
            log.warning("Could not abort multipart upload of s3://%s/%s: %s", self.bucket, key, err)
        self.open_uploads.pop(key, None)

    def abort(self) -> None:
        """Abort every open multipart upload; already completed objects stay (a rerun overwrites them).

        Parts, creates and completions no thread has taken yet are dropped first, so an abort (a
        failure, a killed task) waits only for the calls under way, not for a staging being given up.
        """
        for pool in (self._uploader, self._finisher):
            if pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
        job = self._job
        if job is not None:
            for writer in (job.data, job.map):
                if writer is not None:
                    writer.abort()
        self._stop_uploader()  # the calls under way end (or fail) before their uploads are aborted
        self._finishing.clear()
        self.spare_parts.clear()
        for key, upload_id in list(self.open_uploads.items()):
            self.abort_upload(key, upload_id)
        self._job = None
        self._closed = True

    def uploader(self) -> ThreadPoolExecutor:
        """The ``upload_threads`` threads that send parts while records are built (two by default: one
        part on the wire while S3 takes in the previous one), started with the ``FINISHING_THREADS``.

        Objects are completed on threads of their own: a completion waits for the object's last
        parts and then for S3 to assemble it, which S3 documents may take minutes; on the upload
        threads two completing objects held both while the builder waited for its parts to go.
        While they run, the thread switch interval is lowered to ``UPLOAD_SWITCH_INTERVAL_S``: the
        building thread never waits on I/O, so at the default 5 ms an upload thread waited up to
        5 ms for the GIL at each of the ~50 steps of a part upload, and uploads crawled. Restored
        when uploads stop.
        """
        if self._uploader is None:
            self._uploader = ThreadPoolExecutor(
                max_workers=self.upload_threads, thread_name_prefix="jsonl-stager-upload"
            )
            self._finisher = ThreadPoolExecutor(
                max_workers=FINISHING_THREADS, thread_name_prefix="jsonl-stager-finish"
            )
            self._switch_interval = sys.getswitchinterval()
            sys.setswitchinterval(min(self._switch_interval, UPLOAD_SWITCH_INTERVAL_S))
            # Objects an earlier staging left, listed while records build; close deletes those not rewritten.
            self._earlier_objects = self._finisher.submit(self._list_ours)
        return self._uploader

    def _stop_uploader(self) -> None:
        """Wait for the parts still queued, then for every object being finished, and stop both pools
        (after an abort's cancel, a completion waiting for a dropped part fails at once)."""
        if self._uploader is not None:
            self._uploader.shutdown(wait=True)
            self._uploader = None
        if self._finisher is not None:
            self._finisher.shutdown(wait=True)
            self._finisher = None
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
            self._switch_interval = None


class DiscardingS3:
    """An S3 client that keeps nothing: what :class:`JsonlStager` asks is answered, every body dropped.

    Staging into it gives the plan a staging would give (job sizes, bytes, files) without writing
    anything: prepare plans with it before it stages over an earlier try's jobs. Sizes are kept and
    ETags made up per write, so the stager's size and ETag checks run as they do against S3.
    """

    def __init__(self) -> None:
        self.objects: dict[str, tuple[int, str]] = {}
        self.uploads: dict[str, list[int]] = {}
        self.writes = 0
        self._lock = threading.Lock()

    def _etag(self) -> str:
        with self._lock:
            self.writes += 1
            return f"discarded{self.writes:08d}"

    def put_object(self, *, Key: str, Body: bytes | bytearray, **_: Any) -> dict[str, str]:
        etag = self._etag()
        with self._lock:
            self.objects[Key] = (len(Body), etag)
        return {"ETag": f'"{etag}"'}

    def create_multipart_upload(self, *, Key: str, **_: Any) -> dict[str, str]:
        upload_id = f"discarded-upload-{self._etag()}"
        self.uploads[upload_id] = []
        return {"UploadId": upload_id}

    def upload_part(
        self, *, UploadId: str, PartNumber: int, Body: bytes | bytearray, **_: Any
    ) -> dict[str, str]:
        self.uploads[UploadId].append(len(Body))
        return {"ETag": f'"{self._etag()}"'}

    def complete_multipart_upload(self, *, Key: str, UploadId: str, **_: Any) -> dict[str, str]:
        sizes = self.uploads.pop(UploadId)
        etag = f"{self._etag()}-{len(sizes)}"
        with self._lock:
            self.objects[Key] = (sum(sizes), etag)
        return {"ETag": f'"{etag}"'}

    def abort_multipart_upload(self, *, UploadId: str, **_: Any) -> dict[str, Any]:
        self.uploads.pop(UploadId, None)
        return {}

    def head_object(self, *, Key: str, **_: Any) -> dict[str, Any]:
        size, etag = self.objects[Key]
        return {"ContentLength": size, "ETag": f'"{etag}"'}

    def list_objects_v2(self, *, Prefix: str, **_: Any) -> dict[str, Any]:
        with self._lock:  # the stager lists on one of its threads while others write
            keys = [key for key in self.objects if key.startswith(Prefix)]
        return {"Contents": [{"Key": key} for key in keys], "IsTruncated": False}

    def delete_objects(self, **_: Any) -> dict[str, Any]:
        return {}


def iter_record_map(
    s3: Any, map_uri: str, *, owner: Mapping[str, str] | None = None
) -> Iterator[tuple[str, str, int]]:
    """Read a job's record map back: (record id, source key, attempt) per staged record.

    A map line is a JSON array of up to ``MAP_BLOCK`` ``[record id, source key, attempt]`` entries
    (one ``orjson.dumps`` per thousand records when staging, where an object per record cost ~0.4 us
    each); a line that is one ``{"r": id, "k": key, "a": attempt}`` object, as maps were written
    before, is read too. A read's worth of lines is parsed as one JSON array; a block that does not
    parse is read line by line, so the error names the bad line's own problem.

    :raises StagingError: naming the map and the line, when a line is not JSON or not of that shape.
    """
    from bedrock_batch.s3paths import iter_chunks, split_s3_uri, whole_line_spans

    bucket, key = split_s3_uri(map_uri)
    first_line = 1
    chunks = iter_chunks(s3, bucket, key, owner=dict(owner or {}))
    for data, start, end in whole_line_spans(chunks, name=f"record map {map_uri}"):
        block = data[start : end - 1] if data[end - 1 : end] == b"\n" else data[start:end]
        try:
            entries = _map_entries(block, first_line)
        except ValueError as err:
            raise StagingError(f"record map {map_uri} cannot be read: {err}") from err
        first_line += block.count(b"\n") + 1
        yield from entries


def _map_entries(block: bytes, first_line: int) -> list[tuple[str, str, int]]:
    """The entries of whole map lines (without the last newline), the first being line ``first_line``.

    :raises ValueError: naming the line that is not JSON or not of a map line's shape.
    """
    numbered: Iterable[tuple[int, Any]]
    try:
        numbered = enumerate(orjson.loads(b"[" + block.replace(b"\n", b",") + b"]"), start=first_line)
    except orjson.JSONDecodeError:  # blank or bad lines: read one by one, so the error names the bad one
        numbered = _parsed_lines(block, first_line)
    entries: list[tuple[str, str, int]] = []
    for line_no, line in numbered:
        try:
            entries.extend(_line_entries(line))
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"line {line_no}: {type(err).__name__}: {err}") from err
    return entries


def _parsed_lines(block: bytes, first_line: int) -> list[tuple[int, Any]]:
    parsed = []
    for line_no, line in enumerate(block.split(b"\n"), start=first_line):
        if line.strip():
            try:
                parsed.append((line_no, orjson.loads(line)))
            except orjson.JSONDecodeError as err:
                raise ValueError(f"line {line_no} is not JSON ({err})") from err
    return parsed


def _line_entries(line: Any) -> list[tuple[str, str, int]]:
    """The entries of one parsed map line: a block of entries, or one entry object of earlier maps."""
    if type(line) is dict:
        return [(str(line["r"]), str(line["k"]), int(line["a"]))]
    if type(line) is not list or any(type(entry) is not list or len(entry) != 3 for entry in line):
        raise ValueError("not a list of [record id, source key, attempt] entries")
    return [(str(record_id), str(key), int(attempt)) for record_id, key, attempt in line]
