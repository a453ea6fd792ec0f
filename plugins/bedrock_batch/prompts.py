"""
Prompt templates: YAML files with a ``version``, an optional ``system`` and a ``user`` template.

Placeholders are ``{{ column }}`` where ``column`` is a plain identifier. Nothing is evaluated: no
attribute access, indexing, filters or expressions, and names starting with an underscore are
refused, so a template cannot reach into Python objects. Rendering is a single pass that inserts
each value literally; a value that itself contains ``{{ x }}`` is never expanded.

Any ``{{`` or ``}}`` that is not part of a valid placeholder is an error, so that a typo such as
``{{ transcript }`` fails when the file is loaded instead of leaking into every prompt.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bedrock_batch.errors import ConfigError

_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_IDENTIFIER = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_ALLOWED_KEYS = frozenset({"name", "version", "description", "system", "user"})


def _parse(template: str, *, part: str, source: str) -> tuple[str, ...]:
    """Placeholder names of ``template`` in order of first use; ``ConfigError`` on anything else."""
    names: list[str] = []
    for match in _PLACEHOLDER.finditer(template):
        name = match.group(1).strip()
        if not _IDENTIFIER.fullmatch(name):
            raise ConfigError(
                f"Prompt template {source}: placeholder {match.group(0)!r} in {part!r} is not a plain "
                "column name (letters, digits and underscores, starting with a letter)"
            )
        if name not in names:
            names.append(name)
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise ConfigError(f"Prompt template {source}: unbalanced '{{{{' or '}}}}' in {part!r}")
    return tuple(names)


def prompt_text(value: Any) -> str:
    """How a column value appears in a prompt: NULL as empty, bytes as UTF-8, else ``str``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


@dataclass(frozen=True)
class PromptTemplate:
    """A parsed, validated prompt. ``fields`` lists the placeholders of system and user, in order."""

    name: str
    version: str
    system: str | None
    user: str
    path: str | None = None
    fields: tuple[str, ...] = field(init=False)
    # Each template split once into literal text and placeholder names, so rendering is a join.
    _system_parts: tuple[tuple[str, ...], tuple[str, ...]] | None = field(
        init=False, repr=False, compare=False
    )
    _user_parts: tuple[tuple[str, ...], tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        source = self.source
        if not isinstance(self.user, str) or not self.user.strip():
            raise ConfigError(f"Prompt template {source}: 'user' must be a non-empty string")
        if self.system is not None and not isinstance(self.system, str):
            raise ConfigError(f"Prompt template {source}: 'system' must be a string")
        names = list(_parse(self.system or "", part="system", source=source))
        names += [n for n in _parse(self.user, part="user", source=source) if n not in names]
        object.__setattr__(self, "fields", tuple(names))
        object.__setattr__(self, "_system_parts", _split(self.system) if self.system else None)
        object.__setattr__(self, "_user_parts", _split(self.user))

    @property
    def system_fields(self) -> tuple[str, ...]:
        """The placeholders of the system prompt (none: the system prompt is the same for every row)."""
        return self._system_parts[1] if self._system_parts else ()

    @property
    def user_parts(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The user template as ``(literals, names)``: literal, name, literal, ... in order."""
        return self._user_parts

    @property
    def source(self) -> str:
        """Where the template came from, for error messages."""
        return self.path or f"{self.name!r}"

    def check_fields(self, available_columns: Iterable[str], *, source: str | None = None) -> None:
        """Raise ``ConfigError`` naming the first placeholder that is not among ``available_columns``."""
        available = set(available_columns)
        unknown = [name for name in self.fields if name not in available]
        if unknown:
            raise ConfigError(
                f"Prompt template {source or self.source}: placeholder {{{{ {unknown[0]} }}}} names no "
                f"selected column; available: {', '.join(sorted(available)) or '(none)'}"
            )

    def render(self, row: Mapping[str, Any]) -> tuple[str | None, str]:
        """``(system, user)`` with every placeholder replaced by the row's value, inserted literally."""
        missing = [name for name in self.fields if name not in row]
        if missing:
            raise ConfigError(
                f"Prompt template {self.source}: the row has no value for placeholder {{{{ {missing[0]} }}}}"
            )

        system = _join(self._system_parts, row) if self._system_parts else None
        return system, _join(self._user_parts, row)


def _split(template: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(literals, names)`` with ``len(literals) == len(names) + 1``, alternating in the template."""
    pieces = _PLACEHOLDER.split(template)
    return tuple(pieces[0::2]), tuple(name.strip() for name in pieces[1::2])


def _join(parts: tuple[tuple[str, ...], tuple[str, ...]], row: Mapping[str, Any]) -> str:
    literals, names = parts
    if len(names) == 1:  # the common case, a template around one column: one join, no list
        return "".join((literals[0], prompt_text(row[names[0]]), literals[1]))
    pieces = [literals[0]]
    for name, literal in zip(names, literals[1:], strict=True):
        pieces.append(prompt_text(row[name]))
        pieces.append(literal)
    return "".join(pieces)


def load_prompt(path: str | Path) -> PromptTemplate:
    """Read and validate a template file; every problem is a ``ConfigError`` naming the file."""
    import yaml  # only when a template is actually loaded

    path = Path(path)
    source = str(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Prompt template {source} cannot be read: {exc.strerror or exc}") from exc
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Prompt template {source} is not valid YAML: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigError(f"Prompt template {source} must be a mapping with 'version' and 'user'")
    unknown = sorted(set(data) - _ALLOWED_KEYS)
    if unknown:
        raise ConfigError(f"Prompt template {source}: unknown key {unknown[0]!r}")
    version = data.get("version")
    if version is None or isinstance(version, bool) or not isinstance(version, str | int | float):
        raise ConfigError(f"Prompt template {source}: 'version' is required (a string or number)")
    if str(version).strip() == "":
        raise ConfigError(f"Prompt template {source}: 'version' is empty")
    name = data.get("name") or path.stem
    return PromptTemplate(
        name=str(name),
        version=str(version),
        system=data.get("system"),
        user=data.get("user") if data.get("user") is not None else "",
        path=source,
    )
