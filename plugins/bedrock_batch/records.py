"""
Turning source rows into batch records, and the identities that tie them back to the warehouse.

Every row becomes either a :class:`BatchRecord` (its ``recordId`` and ``modelInput``) or a
:class:`Rejection` saying why not. Rejection messages name the source key and the reason and never
contain the text itself: they end up in logs and in the error table.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from bedrock_batch.errors import ConfigError
from bedrock_batch.models import ModelFamily, estimate_tokens
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

#: Appended to a truncated text so that the model (and a reader of the summary) knows it saw a part.
TRUNCATION_MARKER = "\n[... transcript truncated ...]"

# C0 controls other than tab, newline and carriage return; DEL; C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SLUG_UNSAFE = re.compile(r"[^a-z0-9]+")
_MAX_SLUG = 48
_TRUNCATE_ROUNDS = 5


_B32_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_B32_PAIRS = tuple(first + second for first in _B32_ALPHABET for second in _B32_ALPHABET)
"""Two base32 characters per 10 bits: a record id is 6 lookups (``base64.b32encode`` is pure Python)."""


def _b32(digest: bytes) -> str:
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def record_id_for(source_key: str) -> str:
    """
    The ``recordId`` of a source key: ``"R"`` + 12 base32 characters of blake2b(key, 8 bytes).

    Short, alphanumeric and deterministic, so a rerun writes the same ids and the output joins
    back to the key without trusting the order of the lines.
    """
    digest = hashlib.blake2b(source_key.encode("utf-8"), digest_size=8).digest()
    bits = int.from_bytes(digest, "big") >> 4  # the 60 bits of the first 12 base32 characters
    pairs = _B32_PAIRS
    return "".join(
        (
            "R",
            pairs[bits >> 50],
            pairs[(bits >> 40) & 1023],
            pairs[(bits >> 30) & 1023],
            pairs[(bits >> 20) & 1023],
            pairs[(bits >> 10) & 1023],
            pairs[bits & 1023],
        )
    )


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


@dataclass(frozen=True)
class BatchRecord:
    """One line of a batch input file, plus what the pipeline needs to map its output back."""

    record_id: str
    source_key: str
    attempt: int
    model_input: dict[str, Any] = field(repr=False)  # holds the transcript: keep it out of logs
    est_input_tokens: int
    truncated: bool = False

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
        self.built = 0
        self.truncated = 0
        self.rejected: Counter[str] = Counter()

    def build(self, row: SourceRow) -> BatchRecord | Rejection:
        """The record of ``row``, or the reason it cannot have one."""
        key = (
            row.source_key
            if row.source_key is None or isinstance(row.source_key, str)
            else str(row.source_key)
        )
        if key is None or not key.strip():
            return self._reject(None if key is None else key, NULL_KEY, "source key is NULL or empty")
        if _has_surrogates(key):
            return self._reject(
                key.encode("utf-8", "replace").decode(), INVALID_UTF8, "source key is not valid UTF-8"
            )
        record_id = record_id_for(key)
        fingerprint = hash(record_id)
        if fingerprint in self._seen:
            return self._reject(
                key,
                DUPLICATE_KEY,
                f"source key appears more than once in this run (or shares record id {record_id} with "
                "another of its keys)",
            )
        self._seen.add(fingerprint)

        text, problem = _clean_text(row.text)
        if problem is not None:
            code, reason = problem
            return self._reject(key, code, reason)
        for name, value in row.fields.items():
            if isinstance(value, str) and _has_surrogates(value):
                return self._reject(key, INVALID_UTF8, f"column {name!r} is not valid UTF-8")

        values = {**row.fields, self.text_field: text}
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
            self.truncated += 1

        self.built += 1
        return BatchRecord(
            record_id=record_id,
            source_key=key,
            attempt=row.attempt,
            model_input=self.family.build_input(system=system, prompt=user, params=self.params),
            est_input_tokens=tokens,
            truncated=truncated,
        )

    def _truncate(self, values: dict[str, Any], text: str, tokens: int) -> tuple[str | None, str, int] | None:
        """Cut the text from the end until the prompt fits; ``None`` when even no text does not fit."""
        keep = len(text)
        for _ in range(_TRUNCATE_ROUNDS):
            overflow_chars = int((tokens - self.budget) * 3.5) + len(TRUNCATION_MARKER) + 8
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
