"""whole_line_spans: an object's reads regrouped at newlines without copying each read."""

from __future__ import annotations

import pytest

from bedrock_batch.errors import OutputParseError
from bedrock_batch.s3paths import whole_line_spans

DATA = b"first line\n\nthird, a longer line than the rest of them\nx\nlast line, no newline"


def reads(data: bytes, size: int) -> list[bytes]:
    return [data[at : at + size] for at in range(0, len(data), size)]


@pytest.mark.parametrize("size", [1, 2, 5, 11, 12, 40, len(DATA)])
def test_spans_hold_every_byte_once_in_order_and_end_at_newlines(size):
    spans = list(whole_line_spans(reads(DATA, size)))

    assert b"".join(data[start:end] for data, start, end in spans) == DATA
    assert all(data[end - 1 : end] == b"\n" for data, start, end in spans[:-1])
    assert all(start < end for _, start, end in spans)


def test_the_whole_lines_of_a_read_are_a_span_of_that_read_itself():
    first, second = b"a\nbb\ncc", b"c\ndd\nee\n"

    spans = list(whole_line_spans([first, second]))

    assert spans[0] == (first, 0, 5)
    assert spans[1] == (b"ccc\n", 0, 4)
    assert spans[2][0] is second and spans[2][1:] == (2, 8)


def test_a_line_longer_than_several_reads_comes_as_one_span():
    spans = list(whole_line_spans([b"ab", b"cd", b"ef\ng"]))

    assert [data[start:end] for data, start, end in spans] == [b"abcdef\n", b"g"]


def test_no_reads_give_no_spans():
    assert list(whole_line_spans([])) == []


def test_empty_reads_give_no_spans_and_split_nothing():
    spans = list(whole_line_spans([b"", b"a\nb", b"", b"c\n", b""]))

    assert [data[start:end] for data, start, end in spans] == [b"a\n", b"bc\n"]


def test_a_line_longer_than_the_limit_fails_naming_the_object_instead_of_filling_the_memory():
    endless = iter([b"x" * 10] * 1000)

    with pytest.raises(OutputParseError, match=r"s3://b/out\.jsonl\.out: a line runs past 25 bytes"):
        list(whole_line_spans(endless, name="s3://b/out.jsonl.out", max_line=25))


def test_lines_up_to_the_limit_are_read_whatever_the_reads():
    data = (b"y" * 24 + b"\n") * 4

    spans = list(whole_line_spans(reads(data, 7), max_line=25))

    assert b"".join(data[start:end] for data, start, end in spans) == data


def test_a_line_past_the_limit_is_dropped_up_to_its_newline_when_the_reader_is_told():
    data = b"a\n" + b"x" * 100 + b"\nb\nc"
    told = []

    spans = list(whole_line_spans(reads(data, 7), max_line=25, on_overlong=lambda: told.append(1)))

    assert b"".join(data[start:end] for data, start, end in spans) == b"a\nb\nc"
    assert told == [1]
