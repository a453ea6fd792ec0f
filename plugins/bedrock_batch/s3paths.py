"""Small S3 reading helpers: URIs, bounded listings, streamed lines (never a whole object in memory)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from bedrock_batch.errors import ConfigError, OutputParseError

MAX_LIST_PAGES = 10_000
READ_CHUNK = 1024 * 1024


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` -> (bucket, key)."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ConfigError(f"{uri!r} is not an s3://bucket/key URI")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def job_input_uri(job: Mapping[str, Any]) -> str:
    """The S3 input folder of a Bedrock job (its GetModelInvocationJob or list summary); "" if none."""
    config = job.get("inputDataConfig") or {}
    return str((config.get("s3InputDataConfig") or {}).get("s3Uri") or "")


def staged_under(job: Mapping[str, Any], root: str) -> bool:
    """Whether ``job`` reads input staged below the folder ``root`` (an ``s3://`` URI).

    Job names and tags hold the DAG id and run id only, which another Airflow deployment sharing the
    AWS account (staging and production, say) has too; the input folder, under each deployment's own
    bucket and prefix, tells its jobs apart.
    """
    return job_input_uri(job).startswith(root.rstrip("/") + "/")


def run_input_root(input_uri: str) -> str:
    """The folder a staged job's input belongs to: its run's (``{run}/jobs/{job}/``), else its bucket."""
    run_root, found, _ = input_uri.rpartition("/jobs/")
    if found and run_root:
        return f"{run_root}/"
    return f"s3://{input_uri.removeprefix('s3://').split('/', 1)[0]}/"


def pipeline_input_root(input_bucket: str, input_prefix: str, pipeline: str) -> str:
    """The S3 folder every run of a pipeline stages its input below (``prepare.RunPreparer``'s)."""
    return f"s3://{input_bucket}/{input_prefix}/{pipeline}/"


def list_keys(s3: Any, bucket: str, prefix: str, *, owner: dict[str, str] | None = None) -> Iterator[str]:
    """Every key under ``prefix``, in S3's (lexical) order, page by page."""
    token: str | None = None
    for _ in range(MAX_LIST_PAGES):
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **(owner or {})}
        if token:
            kwargs["ContinuationToken"] = token
        page = s3.list_objects_v2(**kwargs)
        for item in page.get("Contents", []):
            yield item["Key"]
        if not page.get("IsTruncated"):
            return
        token = page["NextContinuationToken"]
    raise RuntimeError(f"s3://{bucket}/{prefix}: more than {MAX_LIST_PAGES} pages of keys")


def iter_line_blocks(
    s3: Any, bucket: str, key: str, *, owner: dict[str, str] | None = None
) -> Iterator[tuple[list[bytes], bool]]:
    """Stream an object's lines a read at a time: ``(lines without their newline, ended by one)``.

    Every block but possibly the last holds lines that ended with a newline; a last line without
    one comes alone, flagged ``False``. Callers that parse many small lines parse a block at once.
    """
    for data, start, end in whole_line_spans(
        iter_chunks(s3, bucket, key, owner=owner), name=f"s3://{bucket}/{key}"
    ):
        if data[end - 1 : end] == b"\n":
            yield data[start : end - 1].split(b"\n"), True
        else:
            yield [data[start:end]], False


MAX_LINE_BYTES = 64 * 1024 * 1024
"""Longer than any Bedrock record's line can be (its model's context plus output, echoed)."""


def whole_line_spans(
    chunks: Iterable[bytes],
    *,
    name: str = "the object",
    max_line: int = MAX_LINE_BYTES,
    on_overlong: Callable[[], None] | None = None,
) -> Iterator[tuple[bytes, int, int]]:
    """The whole lines of ``chunks`` as ``(data, start, end)``: ``data[start:end]`` are whole lines
    (the last newline included) and the next span starts where this one ends.

    A line cut by the end of a read is joined with the start of the next read as a span of its own,
    and the rest of that read is a span inside the read as it came: gluing each read to the tail of
    the one before cost a million-record load a copy of every byte (~0.12 ms a MB). Only the last
    span may lack a newline (the object's last line, when nothing ends it); no span is empty.

    A line running past ``max_line`` bytes (not JSON Lines; held whole it would fill the memory) is
    dropped up to its newline after calling ``on_overlong``, so the lines after it are still read;
    without ``on_overlong`` it raises :class:`OutputParseError` naming ``name``.
    """
    cut_line: list[bytes] = []
    held = 0
    skipping = False
    for chunk in chunks:
        if not chunk:
            continue
        first_end = chunk.find(b"\n") + 1
        if not first_end:
            if skipping:
                continue
            cut_line.append(chunk)
            held += len(chunk)
            if held > max_line:
                if on_overlong is None:
                    raise OutputParseError(f"{name}: a line runs past {max_line} bytes without a newline")
                on_overlong()
                cut_line, held, skipping = [], 0, True
            continue
        held = 0
        start = 0
        if skipping:  # the dropped line ends here
            skipping = False
            start = first_end
        elif cut_line:
            cut_line.append(chunk[:first_end])
            line = b"".join(cut_line)
            cut_line = []
            yield line, 0, len(line)
            start = first_end
        end = chunk.rfind(b"\n") + 1
        if end > start:
            yield chunk, start, end
        if end < len(chunk):
            cut_line.append(chunk[end:])
            held = len(chunk) - end
    if cut_line:
        line = b"".join(cut_line)
        yield line, 0, len(line)


def iter_chunks(s3: Any, bucket: str, key: str, *, owner: dict[str, str] | None = None) -> Iterator[bytes]:
    """Stream an object ``READ_CHUNK`` bytes at a time (the body is closed however the caller stops)."""
    body = s3.get_object(Bucket=bucket, Key=key, **(owner or {}))["Body"]
    try:
        while chunk := body.read(READ_CHUNK):
            yield chunk
    finally:
        body.close()


def iter_lines(
    s3: Any, bucket: str, key: str, *, owner: dict[str, str] | None = None, keepends: bool = False
) -> Iterator[bytes]:
    """Stream an object's lines; a last line without a newline is still returned."""
    for lines, ended in iter_line_blocks(s3, bucket, key, owner=owner):
        if keepends and ended:
            for line in lines:
                yield line + b"\n"
        else:
            yield from lines
