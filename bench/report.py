"""Result rows (the objects of latest.json) and the table printed at the end."""

from __future__ import annotations

from typing import Any


def row(
    name: str,
    size: int | None,
    unit: str,
    project: float | None,
    *,
    baseline: float | None = None,
    limit: float | None = None,
    peak_rss_mb: float | None = None,
    target: str | None = None,
    met: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One figure. ``ratio`` is project / baseline; ``limit_ratio`` project / limit (both when measured)."""
    out: dict[str, Any] = {
        "name": name,
        "size": size,
        "project": _round(project),
        "baseline": _round(baseline),
        "ratio": _round(project / baseline) if project is not None and baseline else None,
        "unit": unit,
        "peak_rss_mb": _round(peak_rss_mb),
    }
    if limit is not None:
        out["limit"] = _round(limit)
        out["limit_ratio"] = _round(project / limit) if project is not None and limit else None
    if target is not None:
        out["target"] = target
        out["met"] = met
    out.update({key: _round(value) if isinstance(value, float) else value for key, value in extra.items()})
    return out


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return round(value, 4) if abs(value) < 10 else round(value, 1)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


COLUMNS = ("name", "size", "project", "baseline", "ratio", "limit", "unit", "peak_rss_mb", "target", "met")


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of the rows (errors shown in the target column)."""
    cells = [list(COLUMNS)]
    for r in rows:
        line = [_cell(r.get(col)) for col in COLUMNS]
        if r.get("error"):
            line[COLUMNS.index("target")] = f"ERROR: {r['error']}"[:60]
        cells.append(line)
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    out = []
    for n, line in enumerate(cells):
        out.append("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
        if n == 0:
            out.append("  ".join("-" * width for width in widths))
    return "\n".join(out)
