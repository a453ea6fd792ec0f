"""Reading a job's record map back, a read at a time, whatever its line endings and blank lines."""

from __future__ import annotations

import io

import orjson
import pytest

from bedrock_batch import s3paths
from bedrock_batch.staging import iter_record_map

ENTRIES = [(f"R{n:012d}", f'key "{n}" \u00e9', n % 3 + 1) for n in range(40)]


class OneObject:
    """get_object of one in-memory object: enough to feed the reader its bytes."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def get_object(self, **_: object) -> dict[str, object]:
        return {"Body": io.BytesIO(self.data)}


def map_file(newline: bytes = b"\n", blank_every: int = 0, last_newline: bool = True) -> bytes:
    lines = []
    for n, (record_id, key, attempt) in enumerate(ENTRIES):
        lines.append(orjson.dumps({"r": record_id, "k": key, "a": attempt}))
        if blank_every and n % blank_every == 0:
            lines.append(b"  ")
    data = newline.join(lines)
    return data + newline if last_newline else data


@pytest.mark.parametrize("read_chunk", [1, 13, 64, 1 << 20])
@pytest.mark.parametrize(
    "data",
    [map_file(), map_file(b"\r\n"), map_file(blank_every=7), map_file(last_newline=False)],
    ids=["plain", "crlf", "blank-lines", "no-last-newline"],
)
def test_every_entry_is_read_back_in_order(monkeypatch, data, read_chunk):
    monkeypatch.setattr(s3paths, "READ_CHUNK", read_chunk)
    assert list(iter_record_map(OneObject(data), "s3://bucket/maps/job.jsonl")) == ENTRIES


def test_a_bad_line_is_an_error_of_its_own():
    data = map_file().replace(b'{"r":"R000000000007"', b'{"r":"R000000000007" oops', 1)
    with pytest.raises(orjson.JSONDecodeError):
        list(iter_record_map(OneObject(data), "s3://bucket/maps/job.jsonl"))
