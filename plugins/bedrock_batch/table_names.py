"""The names of a pipeline's warehouse tables, and the rule every interpolated SQL name follows.

Light on purpose (no database code): the pipeline config checks its table names with these when a
DAG file is parsed, and the warehouse module uses the same ones at run time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bedrock_batch.errors import ConfigError

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def validate_identifier(value: object, *, setting: str, dotted: bool = False) -> str:
    """Return ``value`` if it is a plain SQL identifier (or ``schema.name`` when ``dotted``).

    Identifiers are interpolated into SQL, so anything else is refused with the setting's name.
    """
    parts = value.split(".") if isinstance(value, str) and dotted else [value]
    if not (0 < len(parts) <= 2 and all(isinstance(p, str) and _IDENTIFIER.fullmatch(p) for p in parts)):
        shape = "an SQL identifier or schema.identifier" if dotted else "a plain SQL identifier"
        raise ConfigError(f"{setting} = {value!r} is not {shape} (letters, digits, _; max 63 chars)")
    return value  # type: ignore[return-value]


@dataclass(frozen=True)
class WarehouseTables:
    """Names of a pipeline's three warehouse tables (validated identifiers); a fourth is derived."""

    output_table: str
    error_table: str
    pending_table: str

    def __post_init__(self) -> None:
        names = {}
        for field in ("output_table", "error_table", "pending_table"):
            name = validate_identifier(getattr(self, field), setting=f"warehouse.{field}")
            if name.lower() in names:
                raise ConfigError(
                    f"warehouse.{field} = {name!r} is already used by warehouse.{names[name.lower()]}"
                )
            names[name.lower()] = field
        if self.window_claims_table.lower() in names:
            raise ConfigError(
                f"warehouse.{names[self.window_claims_table.lower()]} = {self.window_claims_table!r} is the "
                "name of the window claims table, named after warehouse.pending_table"
            )
        if len(self.window_claims_table) > 63:
            raise ConfigError(
                f"warehouse.pending_table = {self.pending_table!r} is too long: the window claims "
                f"table {self.window_claims_table!r} named after it must fit in 63 characters"
            )

    @property
    def window_claims_table(self) -> str:
        """Which runs hold which time windows (migration 0003); named after the pending table."""
        return f"{self.pending_table}_windows"

    @property
    def key(self) -> str:
        """Whom the migrations table records versions for: this set of tables (lower case, as SQL
        folds unquoted names), not the pipeline. Keyed by pipeline, renaming a table in the config
        left the new tables uncreated, and a second pipeline on the same tables ran 0002 again."""
        return ",".join(name.lower() for name in (self.output_table, self.error_table, self.pending_table))

    def placeholders(self) -> dict[str, str]:
        return {
            "output_table": self.output_table,
            "error_table": self.error_table,
            "pending_table": self.pending_table,
            "window_claims_table": self.window_claims_table,
        }
