"""Keeping Python's cyclic garbage collector off the objects a task process already holds.

An Airflow task process holds Airflow's, boto3's and the providers' objects (hundreds of thousands)
before it loads or stages a single record, and a million-record load or staging allocates millions
of short-lived containers (parsed lines, rows, tuples). Every few thousand allocations the collector
runs; each full collection walks every tracked object in the process, and on this machine those
walks cost a load about a quarter of its time. Inside :func:`frozen_heap` the objects that existed
when it started are left out of collections (``gc.freeze``); they are handed back when it ends
(``gc.unfreeze``), so nothing is kept alive that would have been freed.

Inside the block the youngest generation is also collected less often (every
:data:`YOUNG_THRESHOLD` net allocations instead of 700): a load's rows live until their batch is
written, so at 700 most of them were walked and promoted before they died (~7 % of a load's CPU).
Cyclic garbage is still collected, only later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator
from contextlib import contextmanager

YOUNG_THRESHOLD = 50_000

_lock = threading.Lock()
_depth = 0
_froze = False
_thresholds: tuple[int, int, int] | None = None


@contextmanager
def frozen_heap() -> Generator[None, None, None]:
    """Freeze the heap (and collect young objects less often) for the block; nested or concurrent
    blocks thaw it when the last one ends.

    A heap something else froze (a forking executor freezes its own before it forks workers) is
    left as it is: thawing it would hand the parent's objects to the collector, whose writes to them
    copy their shared pages into this process.
    """
    global _depth, _froze, _thresholds
    with _lock:
        if _depth == 0:
            _froze = gc.get_freeze_count() == 0
            if _froze:
                gc.freeze()
            young, middle, old = gc.get_threshold()
            if 0 < young < YOUNG_THRESHOLD:  # 0 turns collections off: left so, as is a higher one
                _thresholds = (young, middle, old)
                gc.set_threshold(YOUNG_THRESHOLD, middle, old)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _thresholds is not None:
                gc.set_threshold(*_thresholds)
                _thresholds = None
            if _depth == 0 and _froze:
                gc.unfreeze()
                _froze = False
