"""
JSONL lines of a run's records, spliced into a template serialised once per run.

Every record of a run shares the model body: the family's fields, the params, the system prompt and
the literal text of the user template. Only the record id and the column values differ. JSON
escaping works character by character, so the escaped user prompt is the escaped literals and the
escaped values laid end to end; a line is then one ``bytes.join`` of prepared pieces and the
values' own ``orjson.dumps``, instead of building the ``modelInput`` dict and serialising all of it
again for every record (that was most of the cost of staging a million records).

The template is only used when it provably gives the same bytes as the plain path: the family must
place the record id and the user prompt verbatim, each exactly once, and a probe record built both
ways must match byte for byte. Otherwise :meth:`LineTemplate.for_run` returns ``None`` and the
builder serialises each record's ``modelInput`` as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from stringzilla import Str

from bedrock_batch.models import ModelFamily, estimate_tokens, token_chars
from bedrock_batch.prompts import PromptTemplate, prompt_text

_RECORD_ID = "Rlinetemplate0id"
_USER = "\ue000bedrock-batch-user-prompt\ue001"
# Whitespace at both ends, quotes, backslashes, line breaks, braces and non-ASCII: what a family
# that trims, re-escapes or re-encodes the prompt would change.
_PROBE = ' \n\t probe "quoted" \\ back\tslash\r\n caf\u00e9 \U0001f642 \u2028 {{ x }} end \t\n '
_dumps = orjson.dumps


def _escaped(text: str) -> bytes:
    """``text`` as it appears between the quotes of a JSON string written by orjson."""
    return _dumps(text)[1:-1]


def line_of(record_id: str, model_input: Mapping[str, Any]) -> bytes:
    """The plain path: a record's JSONL line from its ``modelInput`` (newline included)."""
    return _dumps({"recordId": record_id, "modelInput": model_input}, option=orjson.OPT_APPEND_NEWLINE)


def serialised_token_chars(text: str) -> float:
    """:func:`~bedrock_batch.models.token_chars` of a text orjson has serialised without error.

    orjson leaves the text's UTF-8 form cached on it; its length is read from there (a stringzilla
    ``Str`` over it, ~0.1 us) instead of encoding the text again (~2.5 us for 2 KB of non-ASCII text).
    A text orjson refused (a lone surrogate) must not come here: ``Str`` raises ``SystemError`` on it.
    """
    if text.isascii():
        return len(text)
    return token_chars(text, len(Str(text)))


class LineTemplate:
    """The serialised body of one run with holes for the record id and the user prompt's values."""

    def __init__(
        self,
        *,
        head: bytes,
        middle: bytes,
        tail: bytes,
        pieces: tuple[bytes | str, ...],
        system_tokens: int,
        literal_chars: float,
    ) -> None:
        self.head = head
        self.middle = middle
        self.tail = tail
        self.pieces = pieces  # escaped literal bytes and field names, in template order
        self.system_tokens = system_tokens
        self.literal_chars = literal_chars
        self.fields = tuple(piece for piece in pieces if isinstance(piece, str))
        # A user template around one column (the usual case) is two fixed byte strings around it.
        self.single_field = self.fields[0] if len(self.fields) == 1 else None
        self.prefix = self.suffix = b""
        if self.single_field is not None:
            at = pieces.index(self.single_field)
            self.prefix = middle + b"".join(p for p in pieces[:at] if isinstance(p, bytes))
            self.suffix = b"".join(p for p in pieces[at + 1 :] if isinstance(p, bytes)) + tail

    @classmethod
    def for_run(
        cls, family: ModelFamily, prompt: PromptTemplate, params: Mapping[str, Any]
    ) -> LineTemplate | None:
        """The template of records built with ``family``, ``prompt`` and ``params``, if one is exact."""
        if prompt.system_fields:
            return None  # a system prompt that varies per record: the plain path
        system = prompt.system or None
        body = family.build_input(system=system, prompt=_USER, params=params)
        serialised = line_of(_RECORD_ID, body)
        if serialised.count(_RECORD_ID.encode()) != 1 or serialised.count(_escaped(_USER)) != 1:
            return None
        head, rest = serialised.split(_RECORD_ID.encode())
        middle, tail = rest.split(_escaped(_USER))
        literals, names = prompt.user_parts
        pieces: list[bytes | str] = []
        for index, literal in enumerate(literals):
            if literal:
                pieces.append(_escaped(literal))
            if index < len(names):
                pieces.append(names[index])
        template = cls(
            head=head,
            middle=middle,
            tail=tail,
            pieces=tuple(pieces),
            system_tokens=estimate_tokens(system or ""),
            literal_chars=sum(token_chars(literal) for literal in literals),
        )
        probe = dict.fromkeys(names, _PROBE)
        _, user = prompt.render(probe)
        expected = line_of(_RECORD_ID, family.build_input(system=system, prompt=user, params=params))
        if template.line(_RECORD_ID, probe) != expected:
            return None
        return template

    def line_around(self, record_id: str, text_json: bytes) -> bytes:
        """The line of a record whose one value serialises to ``text_json`` (``single_field`` templates)."""
        return b"".join((self.head, record_id.encode(), self.prefix, text_json[1:-1], self.suffix))

    def user_chars(self, values: Mapping[str, Any]) -> float:
        """:func:`~bedrock_batch.models.token_chars` of the rendered user prompt, without rendering it.

        Only once :meth:`line` has serialised ``values`` (see :func:`serialised_token_chars`).
        """
        return self.literal_chars + sum(
            serialised_token_chars(prompt_text(values[name])) for name in self.fields
        )

    def line(self, record_id: str, values: Mapping[str, Any]) -> bytes:
        """The JSONL line of a record; ``orjson.JSONEncodeError`` when a value is not valid UTF-8."""
        parts = [self.head, record_id.encode(), self.middle]
        for piece in self.pieces:
            parts.append(piece if isinstance(piece, bytes) else _escaped(prompt_text(values[piece])))
        parts.append(self.tail)
        return b"".join(parts)
