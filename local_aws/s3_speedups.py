"""
Leaner object storage and CompleteMultipartUpload for moto's S3 backend.

moto 5 keeps each object in a ``SpooledTemporaryFile`` and copies it in on every write and out on
every read: a GET of a 150 MB output file spent ~0.07 s of the server's CPU copying before the first
byte went out. :class:`ObjectValue` holds the object's bytes as they are, so a GET sends them
without a copy. moto 5 also assembles a multipart object by reading every part twice, growing a
``bytearray`` and copying it again, and (when the upload named no checksum algorithm) computing a full-object
CRC64NVME in a third copy: about 1 s of the server's one CPU per 250 MB here, where real S3
answers at once. :func:`install` swaps in the same checks and results with one read per part and
one join. It leaves moto alone when its ``FakeMultipart`` does not look as expected (another moto
version), so the stand-in is then only slower, never wrong.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

log = logging.getLogger(__name__)


def _complete(self: Any, body: Iterator[tuple[int, str]]) -> tuple[bytes, str, tuple[str, str, int] | None]:
    """``FakeMultipart.complete`` with the same validation, ETag and checksum, fewer copies."""
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
    from moto.s3.models import S3_UPLOAD_PART_MIN_SIZE, MultipartChecksumBuilder

    checksums = MultipartChecksumBuilder(
        self.metadata.get("x-amz-checksum-algorithm"), self.metadata.get("x-amz-checksum-type")
    )
    composite = checksums.checksum_type == "COMPOSITE"
    md5s = bytearray()
    values: list[bytes] = []
    last = None
    for number, etag in body:
        part = self.parts.get(number)
        part_etag = part.etag.replace('"', "") if part is not None else None
        if part is None or part_etag != etag.replace('"', ""):
            raise InvalidPart()
        if last is not None and last.contentsize < S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(bytes.fromhex(part_etag))
        value = part.value
        values.append(value)
        if composite:
            checksums.addPart(value)
        else:
            checksums.part_count += 1
        last = part
    if not values:
        raise MalformedXML
    total = b"".join(values)
    if not composite:
        checksums.complete_object = total  # build() takes bytes() of it: no copy for bytes
    etag = f"{hashlib.md5(bytes(md5s), usedforsecurity=False).hexdigest()}-{len(values)}"
    return total, etag, checksums.build()


class ObjectValue:
    """
    The file-like holder moto's ``FakeKey`` keeps an object's bytes in (``seek``, ``read``,
    ``write``, ``truncate``, ``close``), storing the written ``bytes`` object itself.

    Reading the whole value from the start returns that object (immutable, so nothing can change
    it under a reader); a partial read (moto's ETag hashes 16 MB at a time) returns a slice.
    """

    def __init__(self, max_size: int = 0, *args: Any, **kwargs: Any) -> None:  # SpooledTemporaryFile's
        self._data = b""
        self._pos = 0

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: len(self._data)}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int | None = -1) -> bytes:
        start, data = self._pos, self._data
        if start == 0 and (size is None or size < 0 or size >= len(data)):
            self._pos = len(data)
            return data
        stop = len(data) if size is None or size < 0 else min(len(data), start + size)
        self._pos = max(start, stop)
        return data[start:stop]

    def write(self, data: bytes | bytearray | memoryview) -> int:
        chunk = data if type(data) is bytes else bytes(data)  # a mutable buffer is copied once
        if self._pos == 0 and not self._data:
            self._data = chunk
        else:
            head = self._data[: self._pos].ljust(self._pos, b"\0")
            self._data = head + chunk + self._data[self._pos + len(chunk) :]
        self._pos += len(chunk)
        return len(chunk)

    def getvalue(self) -> bytes:
        """The whole object, whatever the position (see :func:`_whole_value`)."""
        return self._data

    def truncate(self, size: int | None = None) -> int:
        size = self._pos if size is None else size
        self._data = self._data[:size]
        return size

    def close(self) -> None:
        self._data = b""
        self._pos = 0


def _whole_value(self: Any) -> bytes:
    """``FakeKey.value``: the object's bytes without the shared position.

    moto's getter seeks to 0 and reads to the end, and its ETag reads the same buffer 16 MB at a time
    without the key's lock: a GET racing the first ETag of an object could send only its tail.
    """
    with self.lock:
        return self._value_buffer.getvalue()


def install() -> bool:
    """Use :class:`ObjectValue` for moto's objects and :func:`_complete` for its multipart uploads.

    ``False`` (and moto left as it is) when moto is not the expected shape.
    """
    try:
        from moto.s3 import models
    except ImportError:
        return False
    multipart = getattr(models, "FakeMultipart", None)
    builder = getattr(models, "MultipartChecksumBuilder", None)
    spooled = getattr(getattr(models, "tempfile", None), "SpooledTemporaryFile", None)
    value = getattr(getattr(models, "FakeKey", None), "value", None)
    if (
        multipart is None
        or builder is None
        or spooled is None
        or not isinstance(value, property)
        or value.fset is None
        or not hasattr(models, "S3_UPLOAD_PART_MIN_SIZE")
    ):
        log.warning("local_aws: moto's S3 models changed; keeping its own object storage")
        return False
    multipart.complete = _complete
    # moto/s3/models.py creates every object's buffer as tempfile.SpooledTemporaryFile(...).
    models.tempfile = SimpleNamespace(SpooledTemporaryFile=ObjectValue)  # type: ignore[attr-defined]
    models.FakeKey.value = property(_whole_value, models.FakeKey.value.fset)
    return True
