"""Keeping Python's cyclic garbage collector off the objects a task process already holds.

An Airflow task process holds Airflow's, boto3's and the providers' objects (hundreds of thousands)
before it loads or stages a single record, and a million-record load or staging allocates millions
of short-lived containers (parsed lines, rows, tuples). Every few thousand allocations the collector
runs; each full collection walks every tracked object in the process, and on this machine those
walks cost a load about a quarter of its time. Inside :func:`frozen_heap` the objects that existed
when it started are left out of collections (``gc.freeze``); they are handed back when it ends
(``gc.unfreeze``), so nothing is kept alive that would have been freed.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0


@contextmanager
def frozen_heap() -> Generator[None, None, None]:
    """Freeze the heap for the block; nested or concurrent blocks thaw it when the last one ends."""
    global _depth
    with _lock:
        if _depth == 0:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
