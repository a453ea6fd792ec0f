"""Synthetic source rows: ~2 KB call transcripts, generated fast and lazily.

``include.demo_data`` draws every record from its own RNG (about 7k records/s): too slow for a
million. Here a pool of demo transcripts trimmed to about 2 KB is drawn once; each row takes one
from the pool behind a line unique to its key, so no two transcripts are equal. Generation is
never inside a timed section: callers take rows chunk by chunk and time only their own work.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import date
from functools import lru_cache
from typing import Any

TRANSCRIPT_CHARS = 2000
CHUNK_ROWS = 10_000
_POOL = 512
_DAY = date(2026, 1, 15)


@lru_cache(maxsize=1)
def transcript_pool(seed: int = 7) -> tuple[str, ...]:
    """``_POOL`` demo-style transcripts, each cut at a line end near ``TRANSCRIPT_CHARS``."""
    from include.demo_data import _TOPICS, _transcript

    rng = random.Random(seed)
    pool = []
    for _ in range(_POOL):
        text = _transcript(rng, _DAY, rng.choice(sorted(_TOPICS)), 40, 0.1)
        cut = text.rfind("\n", 0, TRANSCRIPT_CHARS)
        pool.append(text[: cut if cut > 0 else TRANSCRIPT_CHARS])
    return tuple(pool)


def source_key(index: int) -> str:
    return f"call-20260115-{index:07d}"


def iter_rows(count: int, *, start: int = 0) -> Iterator[dict[str, Any]]:
    """Rows as ``Warehouse.iter_source_rows`` yields them for the summarize_calls pipeline."""
    pool = transcript_pool()
    for index in range(start, start + count):
        key = source_key(index)
        yield {
            "source_key": key,
            "text": f"Call {key} recorded by the IVR.\n{pool[index % _POOL]}",
            "agent_id": f"agent-{index % 40:03d}",
            "customer_id": f"cust-{index % 99_999:05d}",
            "attempt": 1,
            "origin": "window",
            "pending_since": None,
        }


def iter_chunks(count: int, chunk_rows: int = CHUNK_ROWS) -> Iterator[list[dict[str, Any]]]:
    """The rows of ``iter_rows(count)`` as lists of at most ``chunk_rows`` (memory stays flat)."""
    for start in range(0, count, chunk_rows):
        yield list(iter_rows(min(chunk_rows, count - start), start=start))
