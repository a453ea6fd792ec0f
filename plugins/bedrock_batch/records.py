"""
Turning source rows into batch records, and the identities that tie them back to the warehouse.

Every row becomes either a :class:`BatchRecord` (its ``recordId`` and ``modelInput``) or a
:class:`Rejection` saying why not. Rejection messages name the source key and the reason and never
contain the text itself: they end up in logs and in the error table.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from stringzilla import Str, find_first_of

from bedrock_batch.errors import ConfigError
from bedrock_batch.lines import LineTemplate, line_of
from bedrock_batch.models import (
    CHARS_PER_TOKEN,
    EXTRA_BYTE_CHARS,
    ModelFamily,
    estimate_tokens,
    token_chars,
)
from bedrock_batch.prompts import PromptTemplate

#: The ``stage`` of rejections made while building records.
BUILD_STAGE = "build"

NULL_KEY = "null_key"
DUPLICATE_KEY = "duplicate_key"
EMPTY_TEXT = "empty_text"
INVALID_UTF8 = "invalid_utf8"
CONTROL_CHARACTERS = "control_characters"
TOO_LONG = "too_long"
REJECTION_CODES = (
    NULL_KEY,
    DUPLICATE_KEY,
    EMPTY_TEXT,
    INVALID_UTF8,
    CONTROL_CHARACTERS,
    TOO_LONG,
)

_dumps = orjson.dumps

#: Appended to a truncated text so that the model (and a reader of the summary) knows it saw a part.
TRUNCATION_MARKER = "\n[... transcript truncated ...]"

# C0 controls other than tab, newline and carriage return; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: The same C0 controls and DEL as UTF-8 bytes (each is one byte there; C1 controls are two).
_C0_AND_DEL = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_MAX_SLUG = 48
_TRUNCATE_ROUNDS = 5


_B62_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_B62_PAIRS = tuple(first + second for first in _B62_ALPHABET for second in _B62_ALPHABET)
"""Two base62 characters per 3,844 values: a record id is five divisions and six lookups."""
_PAIR_BASE = len(_B62_PAIRS)


_blake2b = hashlib.blake2b


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def record_id_for(source_key: str) -> str:
    """
    The ``recordId`` of a source key: the 64 bits of blake2b(key, 8 bytes) as 11 base62 characters.

    Short, alphanumeric and deterministic, so a rerun writes the same ids and the output joins
    back to the key without trusting the order of the lines. Eleven characters is what the AWS
    guide's input example names ("11 character alphanumeric string"), so the ids fit the strictest
    reading of the format; 62**11 holds every 64-bit value.
    """
    value = int.from_bytes(_blake2b(source_key.encode("utf-8"), digest_size=8).digest(), "big")
    pairs, base = _B62_PAIRS, _PAIR_BASE
    value, e = divmod(value, base)
    value, d = divmod(value, base)
    value, c = divmod(value, base)
    value, b = divmod(value, base)
    value, a = divmod(value, base)  # what is left is under 62: 2**64 < 62 * 3844**5
    return f"{_B62_ALPHABET[value]}{pairs[a]}{pairs[b]}{pairs[c]}{pairs[d]}{pairs[e]}"


def run_key(dag_id: str, run_id: str) -> str:
    """
    The S3-safe folder name of one DAG run: a readable slug of the run id + 8 characters of hash.

    The hash covers the DAG id and the full run id, so runs whose slugs collide (case, punctuation,
    truncation) still get distinct folders, and a rerun of the same run lands in the same place.
    """
    slug = _SLUG_UNSAFE.sub("-", run_id.lower()).strip("-")[:_MAX_SLUG].strip("-") or "run"
    digest = hashlib.blake2b(f"{dag_id}\x00{run_id}".encode(), digest_size=5).digest()
    return f"{slug}-{_b32(digest)[:8]}"


@dataclass(frozen=True)
class SourceRow:
    """One row to summarize: its key (as text), its text, the other selected columns, its attempt.

    Text and columns are left out of ``repr`` so that logging a row never logs a transcript.
    """

    source_key: str | None
    text: str | bytes | None = field(repr=False)
    fields: Mapping[str, Any] = field(default_factory=dict, repr=False)
    attempt: int = 1


@dataclass(frozen=True)
class Rejection:
    """Why a row became no record. ``message`` names the key and the reason, never the text."""

    source_key: str | None
    stage: str
    code: str
    message: str


class BatchRecord:
    """One line of a batch input file, plus what the pipeline needs to map its output back.

    ``line`` is the record's JSONL line (newline included) as the builder wrote it; the stager
    sends those bytes. ``model_input`` is parsed back from the line when first asked for (the
    builder splices most lines from a template and never builds the dict).
    """

    __slots__ = (
        "_model_input",
        "attempt",
        "est_input_tokens",
        "line",
        "record_id",
        "source_key",
        "truncated",
    )

    def __init__(
        self,
        record_id: str,
        source_key: str,
        attempt: int,
        model_input: dict[str, Any] | None,
        est_input_tokens: int,
        truncated: bool = False,
        line: bytes | None = None,
    ) -> None:
        if model_input is None and line is None:
            raise ValueError(f"record {record_id}: needs its model_input or its line")
        self.record_id = record_id
        self.source_key = source_key
        self.attempt = attempt
        self._model_input = model_input
        self.est_input_tokens = est_input_tokens
        self.truncated = truncated
        self.line = line

    def __repr__(self) -> str:  # never the model input: it holds the transcript
        return (
            f"BatchRecord(record_id={self.record_id!r}, source_key={self.source_key!r}, "
            f"attempt={self.attempt}, est_input_tokens={self.est_input_tokens}, truncated={self.truncated})"
        )

    @property
    def model_input(self) -> dict[str, Any]:
        if self._model_input is None:
            self._model_input = orjson.loads(self.line or b"{}")["modelInput"]
        return self._model_input

    def input_line(self) -> dict[str, Any]:
        """The JSON object of this record in the input ``.jsonl`` file."""
        return {"recordId": self.record_id, "modelInput": self.model_input}

    def map_line(self) -> dict[str, Any]:
        """The JSON object of this record in the job's map file (record id -> key, attempt)."""
        return {"r": self.record_id, "k": self.source_key, "a": self.attempt}


class RecordBuilder:
    """
    Builds the records of one run; use one builder per run.

    It remembers every key and record id it has seen, so a key that appears twice, or two keys
    whose record ids collide, are rejected instead of producing two lines Bedrock cannot tell apart.
    ``on_too_long`` decides what happens to a row whose estimated prompt plus ``max_tokens`` exceeds
    the family's context budget: ``"reject"`` it, or ``"truncate"`` its text to fit, with a marker.
    """

    def __init__(
        self,
        family: ModelFamily,
        prompt: PromptTemplate,
        params: Mapping[str, Any],
        on_too_long: Literal["reject", "truncate"] = "reject",
        text_field: str = "transcript",
    ) -> None:
        if on_too_long not in ("reject", "truncate"):
            raise ConfigError(f"on_too_long must be 'reject' or 'truncate', got {on_too_long!r}")
        if text_field not in prompt.fields:
            raise ConfigError(
                f"Prompt template {prompt.source} never uses the text column {{{{ {text_field} }}}}"
            )
        family.validate_params(params)
        self.family = family
        self.prompt = prompt
        self.params = dict(params)
        self.on_too_long = on_too_long
        self.text_field = text_field
        self.budget = family.input_budget(params)
        if self.budget <= 0:
            raise ConfigError(
                f"max_tokens {family.max_tokens(params)} leaves no room for input in the "
                f"{family.context_tokens}-token context of model family {family.name!r}"
            )
        # One int per key seen, not the keys: a 1M-row run keeps ~70 MB here instead of ~250 MB. Equal
        # ids mean the same key, or (about once in 10^8 runs of 1M rows) two keys sharing a record id;
        # either way the second row cannot be told apart in the output, so it is rejected.
        self._seen: set[int] = set()
        self.template = LineTemplate.for_run(family, prompt, self.params)
        self._fast_text = self.template is not None and self.template.single_field == text_field
        # Columns the prompt sends besides the text: checked to be valid UTF-8 (unused ones are not sent).
        self._other_fields = tuple(name for name in prompt.fields if name != text_field)
        self.built = 0
        self.truncated = 0
        self.rejected: Counter[str] = Counter()

    def build(self, row: SourceRow) -> BatchRecord | Rejection:
        """The record of ``row``, or the reason it cannot have one."""
        return self.build_from(row.source_key, row.text, row.fields, row.attempt)

    def build_from(
        self, source_key: Any, raw_text: Any, fields: Mapping[str, Any], attempt: int = 1
    ) -> BatchRecord | Rejection:
        """
        :meth:`build` without the :class:`SourceRow`. The usual row takes :meth:`fast_line`; any
        other (a key or text to convert, a prompt with several fields, a text to truncate, a hint of
        a control character) is checked here one step at a time, and the first problem found names
        the rejection.
        """
        if self._fast_text and type(source_key) is str and type(raw_text) is str:
            made = self.fast_line(source_key, raw_text)
            if made is not None:
                return BatchRecord(made[0], source_key, attempt, None, made[2], False, made[1])
        key = source_key if source_key is None or type(source_key) is str else str(source_key)
        if key is None or not key or key.isspace():
            return self._reject(key, NULL_KEY, "source key is NULL or empty")
        try:
            record_id = record_id_for(key)
        except UnicodeEncodeError:
            return self._reject(
                key.encode("utf-8", "replace").decode(), INVALID_UTF8, "source key is not valid UTF-8"
            )
        fingerprint = hash(record_id)
        if fingerprint in self._seen:
            return self._reject(
                key,
                DUPLICATE_KEY,
                f"source key appears more than once in this run (or shares record id {record_id} with "
                "another of its keys)",
            )
        built = self._build_checked(key, record_id, raw_text, fields, attempt)
        if type(built) is BatchRecord:
            # Only a row that became a record holds its key: a bad row before a good one of the same
            # key (a blank text, then the transcript) must not cost the good one as a duplicate.
            self._seen.add(fingerprint)
        return built

    def _build_checked(
        self, key: str, record_id: str, raw_text: Any, fields: Mapping[str, Any], attempt: int
    ) -> BatchRecord | Rejection:
        """:meth:`build_from` once the key is known to be new: the text, the other columns, the line."""
        if type(raw_text) is str and raw_text and not raw_text.isspace():
            text = raw_text  # UTF-8 and controls are checked on the serialised line below
        else:
            text, problem = _clean_text(raw_text)
            if problem is not None:
                return self._reject(key, problem[0], problem[1])
        for name in self._other_fields:
            value = fields.get(name)
            if type(value) is str and not value.isascii() and _has_surrogates(value):
                return self._reject(key, INVALID_UTF8, f"column {name!r} is not valid UTF-8")

        values = dict(fields)
        values[self.text_field] = text
        template = self.template
        if template is not None and not self._fast_text:
            spliced = self._spliced(template, key, record_id, text, values, attempt)
            if spliced is not None:
                return spliced
        return self._plain(key, record_id, text, values, attempt)

    @property
    def takes_fast_lines(self) -> bool:
        """Whether :meth:`fast_line` applies: the prompt is fixed text around the text column."""
        return self._fast_text

    def fast_line(self, key: str, text: str) -> tuple[str, bytes, int] | None:
        """
        ``(record id, line, estimated tokens)`` of the usual row, or ``None`` to leave it to
        :meth:`build_from`: the hot path of a run (~1M rows a night), only when
        :attr:`takes_fast_lines`.

        The usual row has a text key, a text that is neither blank nor too long, valid UTF-8, and no
        hint of a control character (the prompt uses no other column). Checks that are rare to fail
        ride on the one serialisation every record needs: orjson refuses lone surrogates, and leaves
        the text's UTF-8 form cached for :func:`_may_hold_controls` and the token estimate. A row it
        declines leaves no trace (not even its key among those seen), so :meth:`build_from` then
        decides, and words any rejection, exactly as for any other row.
        """
        if not key or key.isspace() or not text or text.isspace():
            return None
        try:
            record_id = record_id_for(key)
        except UnicodeEncodeError:
            return None
        fingerprint = hash(record_id)
        if fingerprint in self._seen:
            return None
        template = self.template
        assert template is not None  # takes_fast_lines
        try:
            text_json = _dumps(text)
        except orjson.JSONEncodeError:
            return None
        if _may_hold_controls(text, text_json):
            return None
        chars = len(text)
        if not text.isascii():  # lines.serialised_token_chars, inlined: this runs once per record
            chars += (len(Str(text)) - chars) * EXTRA_BYTE_CHARS
        tokens = template.system_tokens + math.ceil((template.literal_chars + chars) / CHARS_PER_TOKEN)
        if tokens > self.budget:
            return None
        self._seen.add(fingerprint)
        self.built += 1
        return record_id, template.line_around(record_id, text_json), tokens

    def _spliced(
        self,
        template: LineTemplate,
        key: str,
        record_id: str,
        text: str,
        values: dict[str, Any],
        attempt: int,
    ) -> BatchRecord | Rejection | None:
        """A line from a template with several placeholders: each value is escaped into its place;
        ``None`` when the prompt is over the budget (:meth:`_plain` rejects or truncates it)."""
        try:
            line = template.line(record_id, values)
        except orjson.JSONEncodeError:
            return self._reject_text(key, text, "the rendered prompt is not valid UTF-8")
        tokens = template.system_tokens + math.ceil(template.user_chars(values) / CHARS_PER_TOKEN)
        if tokens > self.budget:
            return None
        rejection = self._control_rejection(key, text, line)
        if rejection is not None:
            return rejection
        self.built += 1
        return BatchRecord(record_id, key, attempt, None, tokens, False, line)

    def _plain(
        self, key: str, record_id: str, text: str, values: dict[str, Any], attempt: int
    ) -> BatchRecord | Rejection:
        """Render the prompt and build the family's body: no template, or the text must be truncated."""
        system, user = self.prompt.render(values)
        tokens = _estimate(system, user)
        truncated = False
        if tokens > self.budget:
            if self.on_too_long == "reject":
                return self._reject(
                    key,
                    TOO_LONG,
                    f"estimated {tokens} input tokens exceed the budget of {self.budget} "
                    f"(model family {self.family.name!r})",
                )
            fitted = self._truncate(values, text, tokens)
            if fitted is None:
                return self._reject(
                    key,
                    TOO_LONG,
                    f"the prompt without any text already exceeds the budget of {self.budget} tokens",
                )
            system, user, tokens = fitted
            truncated = True

        model_input = self.family.build_input(system=system, prompt=user, params=self.params)
        try:
            line = line_of(record_id, model_input)
        except orjson.JSONEncodeError:
            return self._reject_text(key, text, "the rendered prompt is not valid UTF-8")
        # A truncated line holds only part of the text, so its bytes hint at nothing: the whole text
        # is checked, as an untruncated one is (a control in the cut-off tail still rejects the row).
        rejection = self._control_rejection(key, text, line, hint=not truncated)
        if rejection is not None:
            return rejection
        if truncated:
            self.truncated += 1
        self.built += 1
        return BatchRecord(record_id, key, attempt, model_input, tokens, truncated, line)

    def _control_rejection(
        self, key: str, text: str, serialised: bytes, *, hint: bool = True
    ) -> Rejection | None:
        """The rejection of a text holding control characters; with ``hint``, the exact check runs
        only when ``serialised`` (which holds the whole text) hints at one."""
        if not hint or _may_hold_controls(text, serialised):
            problem = _clean_text(text)[1]
            if problem is not None:
                return self._reject(key, problem[0], problem[1])
        return None

    def _reject_text(self, key: str, text: str, otherwise: str) -> Rejection:
        """A line that orjson refused: the text's own problem if it has one, else ``otherwise``."""
        problem = _clean_text(text)[1]
        if problem is not None:
            return self._reject(key, problem[0], problem[1])
        return self._reject(key, INVALID_UTF8, otherwise)

    def _truncate(self, values: dict[str, Any], text: str, tokens: int) -> tuple[str | None, str, int] | None:
        """Cut the text from the end until the prompt fits; ``None`` when even no text does not fit."""
        keep = len(text)
        # ASCII characters' worth of a character of this text: 1 in English, ~3.8 in Japanese.
        weight = token_chars(text) / len(text) if text else 1.0
        for _ in range(_TRUNCATE_ROUNDS):
            overflow = (tokens - self.budget) * CHARS_PER_TOKEN / weight
            overflow_chars = int(overflow) + len(TRUNCATION_MARKER) + 8
            keep = max(0, keep - overflow_chars)
            system, user = self.prompt.render({**values, self.text_field: text[:keep] + TRUNCATION_MARKER})
            tokens = _estimate(system, user)
            if tokens <= self.budget:
                return system, user, tokens
            if keep == 0:
                return None
        return None

    def _reject(self, key: str | None, code: str, reason: str) -> Rejection:
        self.rejected[code] += 1
        subject = "row with NULL key" if key is None else f"source key {key!r}"
        return Rejection(source_key=key, stage=BUILD_STAGE, code=code, message=f"{subject}: {reason}")


def _estimate(system: str | None, user: str) -> int:
    return estimate_tokens(system or "") + estimate_tokens(user)


def _may_hold_controls(text: str, line: bytes) -> bool:
    """Whether ``text`` may hold a control character; never false when it does. ``line`` holds it
    serialised by orjson, which has left the text's UTF-8 form cached on it.

    Only call it with a text orjson has serialised: ``find_first_of`` (stringzilla 5.3) crashes the
    process on a lone surrogate instead of raising, and orjson refuses those.

    A C0 control or DEL is one byte of that UTF-8 form, found by one vectorised search for any of
    them (``stringzilla.find_first_of``: ~0.3 us for a 2 KB text where the builtin substring
    searches took ~1.2 us). A C1 control is the bytes 0xc2 0x80-0x9f, and the 0xc2 lead is rare,
    so it is looked for in ``line``; a hit elsewhere in the line only costs the exact check.
    """
    return find_first_of(text, _C0_AND_DEL) >= 0 or (b"\xc2" in line and _has_c1(line))


def _has_c1(line: bytes) -> bool:
    """Whether UTF-8 ``line`` holds U+0080..U+009F (0xc2 then 0x80-0x9f); the 0xc2 lead is rare."""
    at = line.find(b"\xc2")
    while 0 <= at < len(line) - 1:
        if 0x80 <= line[at + 1] <= 0x9F:
            return True
        at = line.find(b"\xc2", at + 1)
    return False


def _has_surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _clean_text(raw: str | bytes | bytearray | None) -> tuple[str, tuple[str, str] | None]:
    """The text as ``str``, or the rejection code and reason (positions and counts only)."""
    if raw is None:
        return "", (EMPTY_TEXT, "text is NULL")
    if isinstance(raw, bytes | bytearray):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            return "", (INVALID_UTF8, f"text is not valid UTF-8 (bad byte at offset {exc.start})")
    elif isinstance(raw, str):
        text = raw
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return "", (INVALID_UTF8, f"text is not valid UTF-8 (lone surrogate at character {exc.start})")
    else:
        return "", (INVALID_UTF8, f"text is a {type(raw).__name__}, not a string")
    if not text or text.isspace():  # as ``not text.strip()``, without copying the text
        return "", (EMPTY_TEXT, "text is empty or whitespace only")
    controls = _CONTROL.findall(text)
    if controls:
        first = _CONTROL.search(text)
        position = first.start() if first else -1
        return "", (
            CONTROL_CHARACTERS,
            f"text holds {len(controls)} control character(s), the first at character {position}",
        )
    return text, None
