"""JsonlStager against S3 over HTTP (the local AWS stand-in): layout, rolling, multipart, checks."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
import uuid
from collections.abc import Generator
from dataclasses import dataclass, field

import orjson
import pytest
from botocore.exceptions import ClientError

from bedrock_batch import staging
from bedrock_batch.errors import ConfigError, StagingError
from bedrock_batch.quotas import BatchQuotas
from bedrock_batch.staging import (
    JOB_NAME_PATTERN,
    MIB,
    UPLOAD_SWITCH_INTERVAL_S,
    DuplicateRecordIdError,
    JsonlStager,
    StagePlan,
    iter_record_map,
)

ACCOUNT = "123456789012"
KMS_KEY = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555"

TINY = BatchQuotas(
    min_records_per_job=1,
    max_records_per_file=4,
    max_records_per_job=10,
    max_file_bytes=10_000,
    max_job_bytes=50_000,
    max_concurrent_jobs=2,
)

#: Room for multi-part files: one file, one job.
BIG_FILE_QUOTAS = TINY.with_overrides(
    {
        "max_records_per_file": 100,
        "max_file_bytes": 100 * MIB,
        "max_job_bytes": 100 * MIB,
        "max_records_per_job": 100,
    }
)


@dataclass(frozen=True)
class Record:
    record_id: str
    source_key: str
    attempt: int = 1
    model_input: dict = field(default_factory=dict)
    est_input_tokens: int = 3


def record(n: int, text: str = "hello", **kwargs) -> Record:
    model_input = {"messages": [{"role": "user", "content": [{"text": f"{text} {n}"}]}]}
    return Record(record_id=f"R{n:06d}", source_key=f"key-{n}", model_input=model_input, **kwargs)


def line_bytes(rec: Record) -> int:
    return len(orjson.dumps({"recordId": rec.record_id, "modelInput": rec.model_input})) + 1


@pytest.fixture
def s3(local_aws):
    return local_aws.client("s3")


@pytest.fixture
def bucket(s3):
    name = f"stage-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_stager(s3, bucket):
    def make(job_sizes, quotas=TINY, **kwargs):
        kwargs.setdefault("prefix", "in/demo/run1")
        kwargs.setdefault("job_name_prefix", "demo-run1")
        return JsonlStager(
            s3,
            bucket=bucket,
            job_sizes=job_sizes,
            quotas=quotas,
            output_bucket="out-bucket",
            output_prefix="out/demo/run1",
            **kwargs,
        )

    return make


def stage(stager: JsonlStager, records) -> StagePlan:
    with stager:
        for rec in records:
            stager.add(rec)
        return stager.close()


@contextlib.contextmanager
def sent_requests(s3) -> Generator[list[tuple[str, dict[str, str]]], None, None]:
    """(method, lower-cased headers) of every request ``s3`` sends inside the block."""
    sent: list[tuple[str, dict[str, str]]] = []

    def capture(request, **_):
        headers = {
            name.lower(): value.decode() if isinstance(value, bytes) else value
            for name, value in request.headers.items()
        }
        sent.append((request.method, headers))

    s3.meta.events.register("before-send.s3", capture)
    try:
        yield sent
    finally:
        s3.meta.events.unregister("before-send.s3", capture)


def read(s3, uri: str) -> bytes:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return s3.get_object(Bucket=bucket, Key=key)["Body"].read()


def keys(s3, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


# -- layout and contents ---------------------------------------------------------------------------


def test_one_small_job_is_staged_in_the_run_layout(s3, bucket, make_stager):
    records = [record(n) for n in range(3)]
    plan = stage(make_stager([3]), records)

    (job,) = plan.jobs
    assert job.job_name == "demo-run1-j001"
    assert job.input_s3_uri == f"s3://{bucket}/in/demo/run1/jobs/demo-run1-j001/"
    assert job.output_s3_uri == "s3://out-bucket/out/demo/run1/demo-run1-j001/"
    assert job.map_s3_uri == f"s3://{bucket}/in/demo/run1/maps/demo-run1-j001.jsonl"
    assert keys(s3, bucket) == [
        "in/demo/run1/jobs/demo-run1-j001/part-00001.jsonl",
        "in/demo/run1/maps/demo-run1-j001.jsonl",
    ]
    assert (job.records, job.est_input_tokens) == (3, 9)


def test_input_lines_are_record_id_and_model_input(s3, make_stager):
    records = [record(n) for n in range(3)]
    plan = stage(make_stager([3]), records)

    body = read(s3, plan.jobs[0].files[0].s3_uri)
    lines = [json.loads(line) for line in body.splitlines()]
    assert lines == [{"recordId": r.record_id, "modelInput": r.model_input} for r in records]
    assert body.endswith(b"\n")
    assert plan.jobs[0].files[0].bytes == len(body) == plan.jobs[0].bytes


def test_map_file_maps_every_record_id_to_source_key_and_attempt(s3, make_stager):
    records = [record(n, attempt=n + 1) for n in range(6)]
    plan = stage(make_stager([6]), records)

    lines = [json.loads(line) for line in read(s3, plan.jobs[0].map_s3_uri).splitlines()]
    assert lines == [[[r.record_id, r.source_key, r.attempt] for r in records]]


@pytest.mark.parametrize("job_sizes", [[8], [8, 6], [3, 4]], ids=["whole-blocks", "two-jobs", "short-jobs"])
def test_each_job_map_holds_its_own_entries_in_blocks(s3, make_stager, monkeypatch, job_sizes):
    monkeypatch.setattr(staging, "MAP_BLOCK", 4)
    records = [record(n, attempt=n % 3 + 1) for n in range(sum(job_sizes))]
    quotas = BIG_FILE_QUOTAS.with_overrides({"max_records_per_job": 8})
    plan = stage(make_stager(job_sizes, quotas), records)

    start = 0
    for job, size in zip(plan.jobs, job_sizes, strict=True):
        lines = [json.loads(line) for line in read(s3, job.map_s3_uri).splitlines()]
        assert [len(line) for line in lines] == [4] * (size // 4) + ([size % 4] if size % 4 else [])
        expected = [(r.record_id, r.source_key, r.attempt) for r in records[start : start + size]]
        assert list(iter_record_map(s3, job.map_s3_uri)) == expected
        start += size


def test_map_file_holds_a_line_per_block_of_entries(s3, make_stager, monkeypatch):
    monkeypatch.setattr(staging, "MAP_BLOCK", 4)
    records = [record(n) for n in range(10)]
    plan = stage(make_stager([10]), records)

    lines = [json.loads(line) for line in read(s3, plan.jobs[0].map_s3_uri).splitlines()]
    assert [len(line) for line in lines] == [4, 4, 2]
    assert list(iter_record_map(s3, plan.jobs[0].map_s3_uri)) == [
        (r.record_id, r.source_key, r.attempt) for r in records
    ]


def test_job_names_match_the_bedrock_job_name_pattern(make_stager):
    plan = stage(make_stager([2, 2, 2]), [record(n) for n in range(6)])
    assert [job.job_name for job in plan.jobs] == ["demo-run1-j001", "demo-run1-j002", "demo-run1-j003"]
    assert all(JOB_NAME_PATTERN.match(job.job_name) for job in plan.jobs)


def test_job_name_prefix_bedrock_rejects_is_a_config_error(make_stager):
    with pytest.raises(ConfigError, match="job_name_prefix"):
        make_stager([1], job_name_prefix="demo_run/1")


def test_plan_round_trips_through_json(make_stager):
    plan = stage(make_stager([5, 5]), [record(n) for n in range(10)])
    as_json = json.dumps(plan.to_dict())
    assert StagePlan.from_dict(json.loads(as_json)) == plan
    assert "hello" not in as_json  # no record payloads in XCom


# -- rolling files and jobs ------------------------------------------------------------------------


def test_file_rolls_at_max_records_per_file(s3, make_stager):
    plan = stage(make_stager([10]), [record(n) for n in range(10)])

    (job,) = plan.jobs
    assert [f.records for f in job.files] == [4, 4, 2]
    assert [f.s3_uri.rsplit("/", 1)[1] for f in job.files] == [
        "part-00001.jsonl",
        "part-00002.jsonl",
        "part-00003.jsonl",
    ]
    assert [len(read(s3, f.s3_uri).splitlines()) for f in job.files] == [4, 4, 2]


def test_file_rolls_before_max_file_bytes_would_be_exceeded(s3, make_stager):
    records = [record(n, text="x" * 300) for n in range(6)]
    size = line_bytes(records[0])
    quotas = TINY.with_overrides({"max_records_per_file": 100, "max_file_bytes": 2 * size + size // 2})
    plan = stage(make_stager([6], quotas), records)

    (job,) = plan.jobs
    assert [f.records for f in job.files] == [2, 2, 2]
    assert all(len(read(s3, f.s3_uri)) == f.bytes <= quotas.max_file_bytes for f in job.files)


def test_jobs_take_the_planned_record_counts_in_order(s3, make_stager):
    records = [record(n) for n in range(7)]
    plan = stage(make_stager([4, 3]), records)

    assert [job.records for job in plan.jobs] == [4, 3]
    second = [json.loads(line)["recordId"] for line in read(s3, plan.jobs[1].files[0].s3_uri).splitlines()]
    assert second == [r.record_id for r in records[4:]]


def test_job_ends_early_at_max_job_bytes_and_the_rest_shift_to_later_jobs(make_stager):
    records = [record(n, text="y" * 200) for n in range(9)]
    size = line_bytes(records[0])
    quotas = TINY.with_overrides({"max_file_bytes": 10 * size, "max_job_bytes": 2 * size})
    plan = stage(make_stager([3, 3, 3], quotas), records)

    assert [job.records for job in plan.jobs] == [2, 2, 2, 2, 1]
    assert all(job.bytes <= quotas.max_job_bytes for job in plan.jobs)
    assert sum(job.records for job in plan.jobs) == 9


def test_fewer_records_than_planned_stage_what_arrived(make_stager):
    plan = stage(make_stager([4, 4]), [record(n) for n in range(5)])
    assert [job.records for job in plan.jobs] == [4, 1]


def test_more_records_than_planned_is_a_staging_error(make_stager):
    stager = make_stager([2])
    with pytest.raises(StagingError, match="more records than planned"), stager:
        for n in range(3):
            stager.add(record(n))


# -- multipart and S3 parameters -------------------------------------------------------------------


def test_small_file_is_written_with_one_put_object(local_aws_clean, s3, make_stager):
    stage(make_stager([3]), [record(n) for n in range(3)])
    actions = local_aws_clean.calls()
    assert actions.count("s3:PutObject") == 2  # input file and map
    assert "s3:CreateMultipartUpload" not in actions


def test_file_larger_than_a_part_is_uploaded_in_parts(local_aws_clean, s3, bucket, make_stager):
    records = [record(n, text="z" * (512 * 1024)) for n in range(12)]  # ~6 MiB
    quotas = BIG_FILE_QUOTAS
    plan = stage(make_stager([12], quotas, part_size=5 * MIB), records)

    actions = local_aws_clean.calls()
    assert actions.count("s3:CreateMultipartUpload") == 1
    assert actions.count("s3:UploadPart") == 2
    assert actions.count("s3:CompleteMultipartUpload") == 1
    (staged,) = plan.jobs[0].files
    body = read(s3, staged.s3_uri)
    assert len(body) == staged.bytes
    assert [json.loads(line)["recordId"] for line in body.splitlines()] == [r.record_id for r in records]
    head = s3.head_object(Bucket=bucket, Key=staged.s3_uri.split("/", 3)[3])
    assert head["ETag"].strip('"').endswith("-2")


def test_a_file_of_many_parts_holds_exactly_the_lines_written_whatever_their_sizes(s3, make_stager):
    # Lines from 10 bytes to 700 KiB: some fit the room left in a part's buffer, some cross its end.
    sizes = [10, 300 * 1024, 5, 700 * 1024, 64 * 1024 - 40, 3, 150 * 1024] * 10
    records = [record(n, text="x" * size) for n, size in enumerate(sizes)]
    plan = stage(make_stager([len(records)], BIG_FILE_QUOTAS, part_size=5 * MIB), records)

    (staged,) = plan.jobs[0].files
    expected = b"".join(
        orjson.dumps({"recordId": r.record_id, "modelInput": r.model_input}) + b"\n" for r in records
    )
    assert len(expected) > 2 * 5 * MIB  # three parts at least
    assert read(s3, staged.s3_uri) == expected


def test_an_object_ending_exactly_at_a_part_boundary_holds_every_line(local_aws_clean, s3, make_stager):
    records, size = [], 0
    while 2 * 5 * MIB - size > 600 * 1024:
        records.append(record(len(records), text="y" * (500 * 1024)))
        size += line_bytes(records[-1])
    last_text = 2 * 5 * MIB - size - line_bytes(record(len(records), text=""))
    records.append(record(len(records), text="y" * last_text))
    assert size + line_bytes(records[-1]) == 2 * 5 * MIB  # nothing is left to send when the file seals
    plan = stage(make_stager([len(records)], BIG_FILE_QUOTAS, part_size=5 * MIB), records)

    (staged,) = plan.jobs[0].files
    expected = b"".join(
        orjson.dumps({"recordId": r.record_id, "modelInput": r.model_input}) + b"\n" for r in records
    )
    assert read(s3, staged.s3_uri) == expected
    assert local_aws_clean.calls().count("s3:UploadPart") == 2


def test_part_size_under_the_s3_minimum_is_a_config_error(make_stager):
    with pytest.raises(ConfigError, match="part_size"):
        make_stager([1], part_size=1 * MIB)


def test_kms_key_and_expected_bucket_owner_go_with_every_write(s3, bucket, make_stager):
    with sent_requests(s3) as sent:
        records = [record(n, text="k" * (512 * 1024)) for n in range(12)]
        quotas = BIG_FILE_QUOTAS
        plan = stage(
            make_stager([12], quotas, part_size=5 * MIB, kms_key_id=KMS_KEY, expected_bucket_owner=ACCOUNT),
            records,
        )

    assert sent and all(headers.get("x-amz-expected-bucket-owner") == ACCOUNT for _, headers in sent)
    writes = [h for method, h in sent if "x-amz-server-side-encryption" in h]
    assert len(writes) == 2  # CreateMultipartUpload of the input file, PutObject of the map
    assert all(h["x-amz-server-side-encryption-aws-kms-key-id"] == KMS_KEY for h in writes)
    key = plan.jobs[0].files[0].s3_uri.split("/", 3)[3]
    assert s3.head_object(Bucket=bucket, Key=key)["ServerSideEncryption"] == "aws:kms"


def test_abort_leaves_no_open_multipart_upload(local_aws_clean, s3, bucket, make_stager):
    quotas = BIG_FILE_QUOTAS
    stager = make_stager([12], quotas, part_size=5 * MIB)
    with pytest.raises(RuntimeError), stager:
        for n in range(12):
            stager.add(record(n, text="a" * (512 * 1024)))
        # The first part (5 MiB of the 6) is handed to the upload threads: its upload is open.
        deadline = time.monotonic() + 30
        while "s3:CreateMultipartUpload" not in local_aws_clean.calls() and time.monotonic() < deadline:
            time.sleep(0.01)
        raise RuntimeError("the task was killed")

    calls = local_aws_clean.calls()
    assert "s3:CreateMultipartUpload" in calls and "s3:AbortMultipartUpload" in calls
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- idempotency -----------------------------------------------------------------------------------


def test_restaging_the_same_run_writes_the_same_keys(s3, bucket, make_stager):
    records = [record(n) for n in range(10)]
    first = stage(make_stager([5, 5]), records)
    before = {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys(s3, bucket)}

    second = stage(make_stager([5, 5]), records)
    after = {key: s3.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys(s3, bucket)}

    assert second == first
    assert after == before


def test_restaging_with_fewer_records_deletes_the_stale_input_files(s3, bucket, make_stager):
    stage(make_stager([10, 10]), [record(n) for n in range(20)])
    plan = stage(make_stager([6]), [record(n) for n in range(6)])

    staged = {f.s3_uri.split("/", 3)[3] for job in plan.jobs for f in job.files}
    staged |= {job.map_s3_uri.split("/", 3)[3] for job in plan.jobs}
    assert set(keys(s3, bucket)) == staged


def test_restaging_no_records_deletes_every_input_file_of_the_earlier_staging(s3, bucket, make_stager):
    stage(make_stager([5, 5]), [record(n) for n in range(10)])
    plan = stage(make_stager([5]), [])

    assert plan.jobs == []
    assert keys(s3, bucket) == []


def test_restaging_one_large_file_deletes_the_stale_files_of_the_earlier_staging(s3, bucket, make_stager):
    stage(make_stager([4, 4, 4], BIG_FILE_QUOTAS), [record(n) for n in range(12)])
    big = [record(n, text="l" * (512 * 1024)) for n in range(12)]
    plan = stage(make_stager([12], BIG_FILE_QUOTAS, part_size=5 * MIB), big)

    staged = {f.s3_uri.split("/", 3)[3] for job in plan.jobs for f in job.files}
    staged |= {job.map_s3_uri.split("/", 3)[3] for job in plan.jobs}
    assert set(keys(s3, bucket)) == staged


# -- records the stager refuses --------------------------------------------------------------------


def test_record_larger_than_the_file_limit_is_a_staging_error_naming_it(make_stager):
    quotas = TINY.with_overrides({"max_file_bytes": 500})
    stager = make_stager([2], quotas)
    with pytest.raises(StagingError, match="R000001"), stager:
        stager.add(record(0))
        stager.add(record(1, text="q" * 600))


def test_duplicate_record_id_in_a_job_is_refused_and_the_job_goes_on(s3, make_stager):
    stager = make_stager([3])
    with stager:
        stager.add(record(0))
        with pytest.raises(DuplicateRecordIdError, match="R000000"):
            stager.add(Record(record_id="R000000", source_key="other-key"))
        stager.add(record(1))
        plan = stager.close()
    assert plan.jobs[0].records == 2


def test_record_id_that_is_not_alphanumeric_is_a_staging_error(make_stager):
    stager = make_stager([1])
    with pytest.raises(StagingError, match="R-1"), stager:
        stager.add(Record(record_id="R-1", source_key="k"))


def test_media_in_the_jobs_input_folder_is_accepted(bucket, make_stager):
    stager = make_stager([1])
    uri = f"s3://{bucket}/{stager.job_input_prefix(1)}media/call.mp4"
    video = {"video": {"format": "mp4", "source": {"s3Location": {"uri": uri}}}}
    rec = Record("R1", "k1", model_input={"messages": [{"role": "user", "content": [video]}]})
    plan = stage(stager, [rec])
    assert plan.jobs[0].records == 1


@pytest.mark.parametrize(
    "uri",
    [
        "s3://other-bucket/in/demo/run1/jobs/demo-run1-j001/call.mp4",
        "s3://BUCKET/in/demo/run1/media/call.mp4",
        "s3://BUCKET/in/demo/run1/jobs/demo-run1-j002/call.mp4",
    ],
)
def test_media_outside_the_jobs_input_folder_is_a_staging_error_naming_the_record(bucket, make_stager, uri):
    video = {"video": {"source": {"s3Location": {"uri": uri.replace("BUCKET", bucket)}}}}
    rec = Record("R7", "k7", model_input={"messages": [{"role": "user", "content": [video]}]})
    stager = make_stager([1])
    with pytest.raises(StagingError, match="R7"), stager:
        stager.add(rec)


def test_restaging_leaves_another_stagers_files_and_media_alone(s3, bucket, make_stager):
    other = stage(make_stager([2], job_name_prefix="demo-run1-jumbo"), [record(n) for n in range(2)])
    media_key = "in/demo/run1/jobs/demo-run1-j001/media/call.mp4"
    s3.put_object(Bucket=bucket, Key=media_key, Body=b"video")

    stage(make_stager([2]), [record(n) for n in range(2)])

    remaining = set(keys(s3, bucket))
    assert media_key in remaining
    assert {f.s3_uri.split("/", 3)[3] for f in other.jobs[0].files} <= remaining
    assert other.jobs[0].map_s3_uri.split("/", 3)[3] in remaining


# -- integrity and the upload thread ---------------------------------------------------------------


def test_every_body_goes_with_a_crc32_checksum_s3_verifies(s3, make_stager):
    with sent_requests(s3) as sent:
        records = [record(n, text="c" * (512 * 1024)) for n in range(12)]
        stage(make_stager([12], BIG_FILE_QUOTAS, part_size=5 * MIB), records)

    bodies = [headers for method, headers in sent if method == "PUT"]  # UploadPart x2, PutObject of the map
    assert len(bodies) == 3
    assert all("x-amz-checksum-crc32" in headers for headers in bodies)
    creates = [
        headers for method, headers in sent if method == "POST" and "x-amz-checksum-algorithm" in headers
    ]
    assert [headers["x-amz-checksum-algorithm"] for headers in creates] == ["CRC32"]


def test_thread_switch_interval_is_lowered_while_uploading_and_restored_after(make_stager):
    before = sys.getswitchinterval()
    stager = make_stager([12], BIG_FILE_QUOTAS, part_size=5 * MIB)
    with stager:
        for n in range(12):
            stager.add(record(n, text="s" * (512 * 1024)))
        during = sys.getswitchinterval()
        stager.close()
    assert during == UPLOAD_SWITCH_INTERVAL_S < before
    assert sys.getswitchinterval() == before


def multipart_stager(client, bucket: str) -> JsonlStager:
    """A stager of one 12-record job in 5 MiB parts, on ``client`` (the real one, or a wrapper of it)."""
    return JsonlStager(
        client,
        bucket=bucket,
        prefix="in/demo/run1",
        job_sizes=[12],
        quotas=BIG_FILE_QUOTAS,
        job_name_prefix="demo-run1",
        output_bucket="out-bucket",
        output_prefix="out/demo/run1",
        part_size=5 * MIB,
    )


class WrappedClient:
    """The real client; subclasses change what some of its operations do."""

    def __init__(self, client):
        self._client = client

    def __getattr__(self, name):
        return getattr(self._client, name)


class FailingComplete(WrappedClient):
    """The real client, except that CompleteMultipartUpload fails as S3 would on a bad part list."""

    def complete_multipart_upload(self, **kwargs):
        raise ClientError(
            {"Error": {"Code": "InvalidPart", "Message": "One or more parts not found"}}, "Complete"
        )


def failed_staging(client, bucket: str, error: type[Exception], match: str, *, killed: bool = False):
    """Stage 12 records of 512 KiB (several parts) through ``client`` until ``error`` ends it (``killed``:
    the task dies after 11, the first part handed over), and check what any failure must leave: no
    multipart upload open, the thread switch interval restored. Returns the stager."""
    s3 = client._client
    stager = multipart_stager(client, bucket)
    before = sys.getswitchinterval()
    with pytest.raises(error, match=match), stager:
        for n in range(11 if killed else 12):
            stager.add(record(n, text="f" * (512 * 1024)))
        if killed:
            raise RuntimeError("the task was killed")
        stager.close()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert sys.getswitchinterval() == before
    return stager


def test_completion_failing_on_a_finishing_thread_fails_close_and_aborts_the_upload(s3, bucket):
    failed_staging(FailingComplete(s3), bucket, ClientError, "InvalidPart")


class CallThreads(WrappedClient):
    """The real client, noting the thread each S3 operation was called on."""

    def __init__(self, client):
        super().__init__(client)
        self.threads: dict[str, set[str]] = {}

    def __getattr__(self, name):
        call = getattr(self._client, name)

        def noted(**kwargs):
            self.threads.setdefault(name, set()).add(threading.current_thread().name)
            return call(**kwargs)

        return noted


def test_parts_go_on_the_upload_threads_and_completions_and_the_listing_on_the_finishing_threads(s3, bucket):
    client = CallThreads(s3)
    stager = multipart_stager(client, bucket)
    with stager:
        for n in range(12):
            stager.add(record(n, text="c" * (512 * 1024)))
        stager.close()

    where = {
        "create_multipart_upload": "jsonl-stager-upload",
        "upload_part": "jsonl-stager-upload",
        "complete_multipart_upload": "jsonl-stager-finish",
        "list_objects_v2": "jsonl-stager-finish",
    }
    for operation, threads in where.items():
        assert client.threads[operation], operation
        assert all(name.startswith(threads) for name in client.threads[operation]), operation


class PartsAtOnce(WrappedClient):
    """The real client, except that the first ``count`` parts wait until all of them are being sent."""

    def __init__(self, client, count):
        super().__init__(client)
        self.together = threading.Barrier(count, timeout=10)
        self.parts = 0
        self._lock = threading.Lock()

    def upload_part(self, **kwargs):
        with self._lock:
            self.parts += 1
            waits = self.parts <= self.together.parties
        if waits:
            self.together.wait()  # BrokenBarrierError when fewer are sent at once
        return self._client.upload_part(**kwargs)


def test_upload_threads_is_how_many_parts_are_sent_at_once(s3, bucket, make_stager):
    # Five: more than the three parts an object may have in flight by default, so that bound grows too.
    stager = make_stager([60], BIG_FILE_QUOTAS, part_size=5 * MIB, upload_threads=5)
    stager.s3 = PartsAtOnce(s3, 5)

    plan = stage(stager, [record(n, text="c" * (512 * 1024)) for n in range(60)])

    assert plan.records == 60 and len(plan.jobs[0].files) == 1


@pytest.mark.parametrize("threads", [0, 9])
def test_upload_threads_out_of_range_is_a_config_error_naming_the_setting(make_stager, threads):
    with pytest.raises(ConfigError, match=r"staging\.upload_threads"):
        make_stager([12], upload_threads=threads)


class HeldParts(WrappedClient):
    """The real client, except that each part is held (up to 10 s) until ``release`` is set, and
    completions are counted."""

    def __init__(self, client):
        super().__init__(client)
        self.release = threading.Event()
        self.two_held = threading.Event()
        self.part_numbers: list[int] = []
        self.completions = 0

    def upload_part(self, **kwargs):
        self.part_numbers.append(kwargs["PartNumber"])
        if len(self.part_numbers) >= 2:
            self.two_held.set()
        self.release.wait(timeout=10)
        return self._client.upload_part(**kwargs)

    def complete_multipart_upload(self, **kwargs):
        self.completions += 1
        return self._client.complete_multipart_upload(**kwargs)


def abort_with_two_parts_held(client: HeldParts, stager: JsonlStager, records) -> None:
    """Add ``records``, wait until two parts are being sent (held), then fail: the stager aborts.

    The held parts are released a second later, once the abort has dropped what is queued."""
    release = threading.Timer(1.0, client.release.set)
    try:
        with pytest.raises(RuntimeError, match="the task was killed"), stager:
            for rec in records:
                stager.add(rec)
            assert client.two_held.wait(timeout=10), "two parts were not being sent within 10 s"
            release.start()
            raise RuntimeError("the task was killed")
    finally:
        release.cancel()
        client.release.set()


def test_an_abort_drops_the_parts_no_thread_has_taken_and_aborts_the_upload(s3, bucket, make_stager):
    client = HeldParts(s3)
    stager = make_stager([60], BIG_FILE_QUOTAS, part_size=5 * MIB)
    stager.s3 = client
    records = [record(n, text="h" * (512 * 1024)) for n in range(60)]
    per_part = -(-5 * MIB // line_bytes(records[0]))

    abort_with_two_parts_held(client, stager, records[: 3 * per_part])  # the third part waits

    assert sorted(client.part_numbers) == [1, 2]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_an_abort_completes_no_closed_file_whose_parts_were_still_waiting(s3, bucket, make_stager):
    client = HeldParts(s3)
    records = [record(n, text="h" * (512 * 1024)) for n in range(60)]
    per_part = -(-5 * MIB // line_bytes(records[0]))
    quotas = BIG_FILE_QUOTAS.with_overrides({"max_records_per_file": 3 * per_part})
    stager = make_stager([60], quotas, part_size=5 * MIB)
    stager.s3 = client

    # The first file closes (its third part waiting, its completion waiting for it); the second begins.
    abort_with_two_parts_held(client, stager, records[: 3 * per_part + 1])

    assert sorted(client.part_numbers) == [1, 2]
    assert client.completions == 0
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert keys(s3, bucket) == []


class SlowComplete(WrappedClient):
    """The real client, except that completing an object holds until a part of the third file is sent
    (S3 may take minutes to assemble a large object)."""

    def __init__(self, client):
        super().__init__(client)
        self.third_file_sending = threading.Event()
        self.held_until_timeout = False

    def upload_part(self, **kwargs):
        if kwargs["Key"].endswith("part-00003.jsonl"):
            self.third_file_sending.set()
        return self._client.upload_part(**kwargs)

    def complete_multipart_upload(self, **kwargs):
        third = kwargs["Key"].endswith("part-00003.jsonl")
        if not third and not self.third_file_sending.wait(timeout=10):
            self.held_until_timeout = True
        return self._client.complete_multipart_upload(**kwargs)


def test_objects_s3_is_slow_to_complete_do_not_hold_up_the_parts_of_the_next_file(s3, bucket):
    client = SlowComplete(s3)
    stager = JsonlStager(
        client,
        bucket=bucket,
        prefix="in/demo/run1",
        job_sizes=[36],
        quotas=BIG_FILE_QUOTAS.with_overrides({"max_records_per_file": 12}),
        job_name_prefix="demo-run1",
        output_bucket="out-bucket",
        output_prefix="out/demo/run1",
        part_size=5 * MIB,
    )

    plan = stage(stager, [record(n, text="c" * (512 * 1024)) for n in range(36)])

    assert [file.records for file in plan.jobs[0].files] == [12, 12, 12]
    assert not client.held_until_timeout


class FailingCreate(WrappedClient):
    """The real client, except that CreateMultipartUpload is refused."""

    def create_multipart_upload(self, **kwargs):
        raise ClientError(
            {"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "CreateMultipartUpload"
        )


def test_a_refused_multipart_create_fails_close_with_the_s3_error_and_leaves_no_upload(s3, bucket):
    stager = failed_staging(FailingCreate(s3), bucket, ClientError, "AccessDenied")

    assert stager.open_uploads == {}


def test_a_task_killed_after_a_refused_create_raises_its_own_error_and_leaves_no_upload(s3, bucket):
    failed_staging(FailingCreate(s3), bucket, RuntimeError, "the task was killed", killed=True)


class FailingList(WrappedClient):
    """The real client, except that ListObjectsV2 is refused."""

    def list_objects_v2(self, **kwargs):
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "ListObjectsV2")


def test_a_refused_listing_of_an_earlier_staging_fails_close_and_leaves_no_upload(s3, bucket):
    stager = failed_staging(FailingList(s3), bucket, ClientError, "AccessDenied")

    assert stager.plan is None
