"""
Reading what Bedrock wrote back: ``<file>.jsonl.out`` lines and ``manifest.json.out``.

Output lines are joined to their records by ``recordId`` only, since the output order is not
guaranteed to match the input. A line that cannot be read becomes a :class:`Quarantined` entry
(file, line number, reason) instead of stopping the whole collection: one garbled line must not
cost the rest of a billed job. Reasons never quote the line, which may hold the transcript.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
import stringzilla

from bedrock_batch.errors import OutputParseError
from bedrock_batch.models import no_text_reason
from bedrock_batch.s3paths import MAX_LINE_BYTES, whole_line_spans

if TYPE_CHECKING:
    from bedrock_batch.models import ModelFamily, ModelOutput

#: Error messages from Bedrock are kept, but only this many characters of them.
MAX_ERROR_MESSAGE = 2000


@dataclass(slots=True)  # not frozen: a frozen init costs ~1 us a record on a million-record load
class ResultLine:
    """One record's outcome: ``output`` on success, ``error_code``/``error_message`` on a record error."""

    record_id: str
    output: ModelOutput | None
    error_code: str | None
    error_message: str | None

    @property
    def ok(self) -> bool:
        return self.output is not None


@dataclass(frozen=True)
class Quarantined:
    """A line that could not be read; kept for a human, counted, never fatal."""

    file: str
    line_no: int
    reason: str
    record_id: str | None = None
    """The line's ``recordId`` when it has one: the record was processed, its output is unreadable."""


def _loads(data: bytes | str) -> Any:
    """Parse JSON with orjson when it is installed, else with the standard library."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a project requirement
        import json

        return json.loads(data)
    return orjson.loads(data)


def iter_output(
    lines: Iterable[bytes | str], *, file: str, family: ModelFamily, first_line_no: int = 1
) -> Iterator[ResultLine | Quarantined]:
    """
    Yield one ``ResultLine`` or ``Quarantined`` per non-blank line of an output file.

    ``lines`` are the raw lines (bytes as read from S3; ``str`` is accepted too); line numbers count
    from ``first_line_no`` and include blank lines so they match the file.
    """
    for line_no, raw in enumerate(lines, start=first_line_no):
        stripped = raw.strip()
        if not stripped:
            continue
        obj = _outcome_only(stripped) if type(stripped) is bytes else None
        if obj is None:
            try:
                obj = _loads(stripped)
            except ValueError:  # json.JSONDecodeError and orjson.JSONDecodeError both are ValueErrors
                yield Quarantined(file, line_no, "line is not valid JSON")
                continue
            except TypeError:  # pragma: no cover - a non-text line from a broken reader
                yield Quarantined(file, line_no, "line is not text")
                continue
        yield _read_line(obj, file=file, line_no=line_no, family=family)


_RECORD_ID_FIRST = re.compile(rb'\{\s*"recordId"\s*:\s*"([A-Za-z0-9]{1,256})"\s*,')
_MODEL_OUTPUT = b'"modelOutput":'


def iter_output_chunks(
    chunks: Iterable[bytes], *, file: str, family: ModelFamily
) -> Iterator[list[ResultLine | Quarantined]]:
    """
    :func:`iter_output` over an output file read in chunks: one list per span of whole lines (see
    :func:`~bedrock_batch.s3paths.whole_line_spans`; a line cut between two reads comes alone).

    This is where a million-record load spends its time. The usual line (``recordId`` first, then
    the ``modelInput`` echo, then ``modelOutput``) is not cut out of its chunk: its ``recordId`` is
    matched in place and only the text from its last ``"modelOutput":`` to its end is copied and
    parsed (as :func:`_outcome_only` does). Any other line goes through :func:`iter_output` alone, so
    the items are the same as reading line by line.
    """
    line_no = 0
    dropped: list[int] = []  # lines past MAX_LINE_BYTES since the last span (one at most)

    def overlong() -> None:
        dropped.append(1)

    def quarantine_dropped() -> list[ResultLine | Quarantined]:
        nonlocal line_no
        items: list[ResultLine | Quarantined] = []
        for _ in dropped:
            line_no += 1
            items.append(Quarantined(file, line_no, f"line runs past {MAX_LINE_BYTES} bytes: not read"))
        dropped.clear()
        return items

    for data, start, end in whole_line_spans(
        chunks, name=file, max_line=MAX_LINE_BYTES, on_overlong=overlong
    ):
        if dropped:
            yield quarantine_dropped()
        items, line_no = _read_chunk(data, start, end, line_no, file, family)
        yield items
    if dropped:
        yield quarantine_dropped()


def _read_chunk(
    data: bytes, start: int, stop: int, line_no: int, file: str, family: ModelFamily
) -> tuple[list[ResultLine | Quarantined], int]:
    """The items of the lines in ``data[start:stop]`` (the last line number read is returned too)."""
    items: list[ResultLine | Quarantined] = []
    match, find, rfind = _RECORD_ID_FIRST.match, data.find, data.rfind
    pos = start
    while pos < stop:
        end = find(b"\n", pos, stop)
        if end < 0:
            end = stop
        line_no += 1
        head = match(data, pos, end)
        at = rfind(_MODEL_OUTPUT, pos, end) if head is not None else -1
        outcome = _own_outcome(data, head.end(), at, end) if head is not None and at > head.end() else None
        if outcome is not None and head is not None:
            items.append(_usual_item(outcome, head.group(1).decode(), file, line_no, family))
        elif pos < end:
            items.extend(iter_output((data[pos:end],), file=file, family=family, first_line_no=line_no))
        pos = end + 1
    return items, line_no


def _usual_item(
    outcome: dict[str, Any], record_id: str, file: str, line_no: int, family: ModelFamily
) -> ResultLine | Quarantined:
    """A usual line's item: its output parsed at once, else what :func:`_read_line` says of it."""
    model_output = outcome["modelOutput"]
    if type(model_output) is dict:
        try:
            output = family.parse_output(model_output)
        except OutputParseError:
            pass
        else:
            text = output.text  # no_text_reason inlined: this runs once per record of a load
            if text and not text.isspace():
                return ResultLine(record_id, output, None, None)
    outcome["recordId"] = record_id
    return _read_line(outcome, file=file, line_no=line_no, family=family)


def _own_outcome(
    data: bytes, head_end: int, at: int, end: int, key: str = "modelOutput"
) -> dict[str, Any] | None:
    """``{key: ...}`` of the line ending at ``end`` whose ``recordId`` ends at ``head_end`` and whose
    last ``"key":`` is at ``at``; ``None`` when that is not the line's own outcome (then the whole
    line is parsed).

    ``{`` plus the text from the key to the end of the line parses as one object only when the key
    belongs to the line's own object: a nested one leaves unbalanced braces (see _outcome_only). Odd
    shapes (a second ``recordId``, a null outcome) are left to the full parse. A second ``recordId``
    key between the two is also the sign of a line cut off mid-write with the next one run into it:
    its tail is the next record's outcome, so the whole line is parsed (and is not JSON). That
    search runs on every usual line, so it is stringzilla's (SIMD, ~0.16 us a 3 KB line; CPython's
    ``bytes.find`` took ~0.9 us, a tenth of a load's CPU a record).
    """
    if stringzilla.find(data, b'"recordId"', head_end, at) >= 0:
        return None
    try:
        outcome = orjson.loads(b"{" + data[at:end])
    except orjson.JSONDecodeError:
        return None
    if type(outcome) is not dict or "recordId" in outcome or outcome.get(key) is None:
        return None
    return outcome


#: (key, how it starts in a line): ``modelOutput`` first, as ``_read_line`` prefers it.
_OUTCOME_KEYS = (("modelOutput", _MODEL_OUTPUT), ("error", b'"error":'))


def _outcome_only(line: bytes) -> dict[str, Any] | None:
    """
    ``{"recordId": ..., "modelOutput" | "error": ...}`` of a Bedrock output line, without parsing
    the ``modelInput`` echo that makes up most of it; ``None`` when the line is not in the expected
    shape, and the caller parses it whole.

    Unescaped ``"key":`` only occurs as a key (quotes inside strings are escaped), and ``{`` plus the
    text from a key to the end of the line is valid JSON only for a key of the outer object: a
    nested key leaves unbalanced closing braces. So a successful parse read the line's own outcome.
    """
    head = _RECORD_ID_FIRST.match(line)
    if head is None:
        return None
    for key, needle in _OUTCOME_KEYS:
        at = line.rfind(needle)
        if at <= head.end():
            continue
        tail = _own_outcome(line, head.end(), at, len(line), key)
        if tail is not None:
            tail["recordId"] = head.group(1).decode()
        return tail
    return None


def _read_line(obj: Any, *, file: str, line_no: int, family: ModelFamily) -> ResultLine | Quarantined:
    if not isinstance(obj, dict):
        return Quarantined(file, line_no, "line is not a JSON object")
    record_id = obj.get("recordId")
    if not isinstance(record_id, str) or not record_id:
        return Quarantined(file, line_no, "line has no recordId")
    model_output = obj.get("modelOutput")
    if model_output is not None:
        if not isinstance(model_output, Mapping):
            return Quarantined(file, line_no, f"record {record_id}: modelOutput is not an object", record_id)
        try:
            output = family.parse_output(model_output)
        except OutputParseError as exc:
            return Quarantined(
                file, line_no, f"record {record_id}: {exc} (model family {family.name})", record_id
            )
        empty = no_text_reason(output)
        if empty is not None:
            return Quarantined(
                file, line_no, f"record {record_id}: {empty} (model family {family.name})", record_id
            )
        return ResultLine(record_id=record_id, output=output, error_code=None, error_message=None)
    error = obj.get("error")
    if error is not None:
        code, message = _error_fields(error)
        return ResultLine(record_id=record_id, output=None, error_code=code, error_message=message)
    # No sign the record was processed: left without its id, so it is queued for a retry.
    return Quarantined(file, line_no, f"record {record_id}: line has neither modelOutput nor error")


def _error_fields(error: Any) -> tuple[str, str | None]:
    """``errorCode`` as text (it arrives as an integer or a string) and the message, shortened."""
    if isinstance(error, Mapping):
        code = error.get("errorCode")
        message = error.get("errorMessage")
    else:
        code, message = None, error
    code_text = "unknown" if code is None or code == "" else str(code)
    message_text = None if message is None else str(message)[:MAX_ERROR_MESSAGE]
    return code_text, message_text


@dataclass(frozen=True)
class Manifest:
    """The counts of ``manifest.json.out``; token counts are ``None`` when Bedrock leaves them out."""

    total_record_count: int
    processed_record_count: int
    success_record_count: int
    error_record_count: int
    input_token_count: int | None
    output_token_count: int | None


_REQUIRED_COUNTS = {
    "totalRecordCount": "total_record_count",
    "processedRecordCount": "processed_record_count",
    "successRecordCount": "success_record_count",
    "errorRecordCount": "error_record_count",
}
_OPTIONAL_COUNTS = {"inputTokenCount": "input_token_count", "outputTokenCount": "output_token_count"}


def _count(value: Any, name: str, file: str) -> int:
    if isinstance(value, bool):
        raise OutputParseError(f"{file}: {name} is not a count")
    try:
        number = int(value)
    except (TypeError, ValueError) as exc:
        raise OutputParseError(f"{file}: {name} is not a count") from exc
    if number < 0 or (isinstance(value, float) and value != number):
        raise OutputParseError(f"{file}: {name} is not a count")
    return number


def parse_manifest(data: bytes, *, file: str = "manifest.json.out") -> Manifest:
    """Read a job's manifest; ``OutputParseError`` naming the file and field when it is not one."""
    try:
        obj = _loads(data)
    except ValueError as exc:
        raise OutputParseError(f"{file} is not valid JSON") from exc
    if not isinstance(obj, dict):
        raise OutputParseError(f"{file} is not a JSON object")
    counts: dict[str, int | None] = {}
    for key, attr in _REQUIRED_COUNTS.items():
        if key not in obj:
            raise OutputParseError(f"{file}: {key} is missing")
        counts[attr] = _count(obj[key], key, file)
    for key, attr in _OPTIONAL_COUNTS.items():
        counts[attr] = None if obj.get(key) is None else _count(obj[key], key, file)
    return Manifest(**counts)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Reconciliation:
    """What a job's output says about its records compared with what was submitted."""

    missing: list[str]
    unexpected: list[str]
    manifest_mismatch: str | None

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected and self.manifest_mismatch is None


def reconcile(expected_ids: set[str], seen_ids: set[str], manifest: Manifest | None) -> Reconciliation:
    """
    Compare the submitted record ids with those found in the output, and both with the manifest.

    ``missing`` are records to carry over (Bedrock did not process them, e.g. a PartiallyCompleted
    job); ``unexpected`` are ids the job never had, a sign of a wrong map or output folder.
    """
    missing = sorted(expected_ids - seen_ids)
    unexpected = sorted(seen_ids - expected_ids)
    problems: list[str] = []
    if manifest is not None:
        if manifest.total_record_count != len(expected_ids):
            problems.append(
                f"manifest totalRecordCount {manifest.total_record_count} != {len(expected_ids)} submitted"
            )
        if manifest.processed_record_count != len(seen_ids):
            problems.append(
                f"manifest processedRecordCount {manifest.processed_record_count} != {len(seen_ids)} read"
            )
        if manifest.success_record_count + manifest.error_record_count != manifest.processed_record_count:
            problems.append(
                f"manifest successRecordCount {manifest.success_record_count} + errorRecordCount "
                f"{manifest.error_record_count} != processedRecordCount {manifest.processed_record_count}"
            )
    return Reconciliation(
        missing=missing, unexpected=unexpected, manifest_mismatch="; ".join(problems) or None
    )
