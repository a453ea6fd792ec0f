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
_froze = False


@contextmanager
def frozen_heap() -> Generator[None, None, None]:
    """Freeze the heap for the block; nested or concurrent blocks thaw it when the last one ends.

    A heap something else froze (a forking executor freezes its own before it forks workers) is
    left as it is: thawing it would hand the parent's objects to the collector, whose writes to them
    copy their shared pages into this process.
    """
    global _depth, _froze
    with _lock:
        if _depth == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _froze:
                gc.unfreeze()
                _froze = False
