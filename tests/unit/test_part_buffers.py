"""The stager's part buffers: filled in place, handed to the upload threads, filled again once sent."""

from __future__ import annotations

import threading
import time

from bedrock_batch.quotas import BatchQuotas
from bedrock_batch.staging import MIB, DiscardingS3, JsonlStager

PART = 5 * MIB
QUOTAS = BatchQuotas().with_overrides({"min_records_per_job": 1})


class RecordingS3(DiscardingS3):
    """Keeps what each part held when it was sent, and which buffer object it was sent in."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: dict[int, bytes] = {}
        self.buffers: dict[int, bytes | bytearray] = {}  # held, so no id is re-used meanwhile
        self._sent_lock = threading.Lock()

    def upload_part(self, *, UploadId: str, PartNumber: int, Body: bytes | bytearray, **kwargs: object):
        with self._sent_lock:
            self.sent[PartNumber] = bytes(Body)
            self.buffers[PartNumber] = Body
        return super().upload_part(UploadId=UploadId, PartNumber=PartNumber, Body=Body, **kwargs)

    def put_object(self, *, Key: str, Body: bytes | bytearray, **kwargs: object):
        if "/jobs/" in Key:
            self.sent[0] = bytes(Body)
        return super().put_object(Key=Key, Body=Body, **kwargs)


def line(n: int, size: int) -> bytes:
    head = b'{"recordId":"R%06d","modelInput":{"t":"' % n
    return head + b"z" * (size - len(head) - 4) + b'"}}\n'


def new_stager(s3: RecordingS3, records: int) -> JsonlStager:
    return JsonlStager(
        s3,
        bucket="b",
        prefix="p",
        job_sizes=[records],
        quotas=QUOTAS,
        job_name_prefix="t",
        output_bucket="b",
        output_prefix="o",
        part_size=PART,
    )


def stage(s3: RecordingS3, lines: list[bytes], seed: bytearray | None = None) -> None:
    stager = new_stager(s3, len(lines))
    if seed is not None:
        stager.spare_parts.append(seed)
    with stager:
        for n, data in enumerate(lines):
            stager.add_line(f"R{n:06d}", f"key-{n}", 1, data, 1)
        stager.close()


def test_every_part_holds_exactly_its_lines_when_sent_buffers_are_filled_again():
    lines = [line(n, size) for n, size in enumerate([300_000, 17, 90_000, 1_000_001, 5] * 24)]
    s3 = RecordingS3()
    stage(s3, lines, seed=bytearray(b"#" * (PART + 3 * MIB)))  # stale bytes a part must never send

    assert len(s3.sent) >= 6
    assert b"".join(s3.sent[number] for number in sorted(s3.sent)) == b"".join(lines)


def test_the_second_part_is_filled_in_a_buffer_already_sent_or_spare():
    lines = [line(n, 500_000) for n in range(40)]
    s3 = RecordingS3()
    seed = bytearray(PART + MIB)
    stage(s3, lines, seed=seed)

    # The first part's buffer grew as it was written; the second takes a spare (the seed, or the first
    # part's buffer when its upload ended first) instead of a new one.
    assert s3.buffers[2] is seed or s3.buffers[2] is s3.buffers[1]


def test_a_sent_part_buffer_is_filled_again_by_a_later_part():
    lines = [line(n, 500_000) for n in range(40)]
    s3 = RecordingS3()
    stager = new_stager(s3, len(lines))
    first_part = -(-PART // len(lines[0]))  # the lines that fill the first part, which then goes
    with stager:
        for n in range(first_part):
            stager.add_line(f"R{n:06d}", f"key-{n}", 1, lines[n], 1)
        deadline = time.monotonic() + 10
        while not stager.spare_parts and time.monotonic() < deadline:  # until it has been sent
            time.sleep(0.01)
        assert stager.spare_parts, "the first part was not sent within 10 s"
        for n in range(first_part, len(lines)):
            stager.add_line(f"R{n:06d}", f"key-{n}", 1, lines[n], 1)
        stager.close()

    assert s3.buffers[2] is s3.buffers[1]
    assert b"".join(s3.sent[number] for number in sorted(s3.sent)) == b"".join(lines)
