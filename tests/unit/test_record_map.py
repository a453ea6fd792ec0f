"""Reading a job's record map back, a read at a time, whatever its line endings and blank lines.

Maps are written a block of entries per line; maps written an object per entry read the same."""

from __future__ import annotations

import io

import orjson
import pytest

from bedrock_batch import s3paths
from bedrock_batch.errors import StagingError
from bedrock_batch.staging import iter_record_map

ENTRIES = [(f"R{n:012d}", f'key "{n}" \u00e9', n % 3 + 1) for n in range(40)]


class OneObject:
    """get_object of one in-memory object: enough to feed the reader its bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_object(self, **_: object) -> dict[str, object]:
        return {"Body": io.BytesIO(self.data)}


def map_file(
    newline: bytes = b"\n", blank_every: int = 0, last_newline: bool = True, per_line: int = 1
) -> bytes:
    """A map of ``ENTRIES``: ``per_line`` > 1 writes blocks of entries, 1 an object per entry."""
    lines = []
    for n in range(0, len(ENTRIES), per_line):
        if per_line == 1:
            record_id, key, attempt = ENTRIES[n]
            lines.append(orjson.dumps({"r": record_id, "k": key, "a": attempt}))
        else:
            lines.append(orjson.dumps(ENTRIES[n : n + per_line]))
        if blank_every and n % blank_every == 0:
            lines.append(b"  ")
    data = newline.join(lines)
    return data + newline if last_newline else data


@pytest.mark.parametrize("read_chunk", [1, 13, 64, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [
        map_file(),
        map_file(b"\r\n"),
        map_file(blank_every=7),
        map_file(last_newline=False),
        map_file(per_line=7),
        map_file(b"\r\n", blank_every=2, per_line=7),
    ],
    ids=["plain", "crlf", "blank-lines", "no-last-newline", "blocks", "blocks-crlf-blank-lines"],
)
def test_every_entry_is_read_back_in_order(monkeypatch, data, read_chunk):
    monkeypatch.setattr(s3paths, "READ_CHUNK", read_chunk)
    assert list(iter_record_map(OneObject(data), "s3://bucket/maps/job.jsonl")) == ENTRIES


MAP = "s3://bucket/maps/job.jsonl"


@pytest.mark.parametrize("read_chunk", [64, 1 << 20])
def test_a_line_that_is_not_json_is_an_error_naming_the_map_and_the_line(monkeypatch, read_chunk):
    monkeypatch.setattr(s3paths, "READ_CHUNK", read_chunk)
    data = map_file().replace(b'{"r":"R000000000007"', b'{"r":"R000000000007" oops', 1)
    with pytest.raises(StagingError, match=rf"record map {MAP} cannot be read: line 8 is not JSON"):
        list(iter_record_map(OneObject(data), MAP))


@pytest.mark.parametrize("read_chunk", [64, 1 << 20])
def test_a_block_line_that_is_not_json_is_an_error_naming_its_line(monkeypatch, read_chunk):
    monkeypatch.setattr(s3paths, "READ_CHUNK", read_chunk)
    data = map_file(per_line=7).replace(b'["R000000000007"', b'["R000000000007" oops', 1)
    with pytest.raises(StagingError, match=rf"record map {MAP} cannot be read: line 2 is not JSON"):
        list(iter_record_map(OneObject(data), MAP))


@pytest.mark.parametrize(
    "entry", [["R000000000002", "key"], "ab1", ["R000000000002", "key", 1, 2]], ids=["short", "text", "long"]
)
def test_a_block_entry_of_the_wrong_shape_is_an_error_naming_its_line(entry):
    data = orjson.dumps([["R000000000001", "key", 1]]) + b"\n" + orjson.dumps([["R0001", "k", 1], entry])
    with pytest.raises(
        StagingError, match=r"line 2: ValueError: not a list of \[record id, source key, attempt\] entries"
    ):
        list(iter_record_map(OneObject(data), MAP))


def test_an_attempt_that_is_not_a_number_is_an_error_naming_its_line():
    data = orjson.dumps([["R000000000001", "key", "first"]])
    with pytest.raises(StagingError, match="line 1: ValueError: invalid literal for int"):
        list(iter_record_map(OneObject(data), MAP))


def test_an_object_line_without_its_attempt_is_an_error_naming_its_line():
    data = orjson.dumps({"r": "R000000000001", "k": "key", "a": 1}) + b"\n"
    data += orjson.dumps({"r": "R000000000002", "k": "key"}) + b"\n"
    with pytest.raises(StagingError, match="line 2: KeyError: 'a'"):
        list(iter_record_map(OneObject(data), MAP))
