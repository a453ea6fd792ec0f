"""The stand-in's leaner object storage and multipart completion apply to the pinned moto."""

from __future__ import annotations

import hashlib

import pytest
from moto.s3 import models

from local_aws import s3_speedups
from local_aws.s3_speedups import ObjectValue


@pytest.fixture
def installed():
    originals = models.FakeMultipart.complete, models.tempfile, models.FakeKey.value
    try:
        assert s3_speedups.install() is True
        yield
    finally:
        models.FakeMultipart.complete, models.tempfile, models.FakeKey.value = originals


def test_install_replaces_motos_multipart_completion(installed):
    assert models.FakeMultipart.complete is s3_speedups._complete


def test_install_keeps_new_objects_in_an_object_value(installed):
    key = models.FakeKey("object.jsonl", b"line\n", account_id="123456789012", region_name="us-east-1")
    try:
        assert type(key._value_buffer) is ObjectValue
    finally:
        key.dispose()


def test_a_key_reads_back_its_bytes_and_their_md5_etag(installed):
    body = b"x" * (20 * 1024 * 1024) + b"tail"  # past moto's 16 MB ETag reads
    key = models.FakeKey("object.jsonl", body, account_id="123456789012", region_name="us-east-1")
    try:
        assert key.value == body
        assert key.etag == f'"{hashlib.md5(body, usedforsecurity=False).hexdigest()}"'
    finally:
        key.dispose()


def test_a_key_reads_back_its_whole_value_whatever_position_an_etag_read_left(installed):
    body = b"head" + b"x" * 100
    key = models.FakeKey("object.jsonl", body, account_id="123456789012", region_name="us-east-1")
    try:
        key._value_buffer.seek(0)
        key._value_buffer.read(4)  # as moto's ETag does, 16 MB at a time, without the key's lock
        assert key.value == body
    finally:
        key.dispose()


def test_a_whole_read_returns_the_stored_bytes_without_a_copy():
    body = b"a" * 1000
    value = ObjectValue()
    value.write(body)
    value.seek(0)
    assert value.read() is body


def test_partial_reads_go_on_from_where_the_last_one_stopped():
    value = ObjectValue()
    value.write(b"0123456789")
    value.seek(0)
    assert [value.read(4), value.read(4), value.read(4), value.read(4)] == [b"0123", b"4567", b"89", b""]


def test_a_mutable_buffer_is_copied_so_a_later_change_does_not_reach_the_object():
    source = bytearray(b"before")
    value = ObjectValue()
    value.write(source)
    source[:] = b"after!"
    value.seek(0)
    assert value.read() == b"before"


def test_a_write_past_the_end_fills_the_gap_with_zero_bytes():
    value = ObjectValue()
    value.write(b"ab")
    value.seek(4)
    value.write(b"cd")
    assert value.getvalue() == b"ab\0\0cd"


def test_a_write_inside_the_value_overwrites_in_place():
    value = ObjectValue()
    value.write(b"abcdef")
    value.seek(-4, 2)
    value.write(b"XY")
    assert value.getvalue() == b"abXYef"


def test_truncate_then_write_replaces_the_value():
    value = ObjectValue()
    value.write(b"old value")
    value.seek(0)
    value.truncate()
    value.write(b"new")
    value.seek(0)
    assert value.read() == b"new"
