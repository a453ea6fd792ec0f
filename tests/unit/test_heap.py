"""frozen_heap: the objects a process holds are left out of collections for a block, then handed back."""

from __future__ import annotations

import gc

import pytest

from bedrock_batch.heap import YOUNG_THRESHOLD, frozen_heap


@pytest.fixture(autouse=True)
def thawed():
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_objects_that_exist_when_the_block_starts_are_frozen_until_it_ends():
    held = [object() for _ in range(3)]
    with frozen_heap():
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0
    assert held


def test_a_nested_block_leaves_the_heap_frozen_until_the_outer_one_ends():
    with frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() == 0


def test_the_heap_is_thawed_when_the_block_raises():
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_freeze_count() == 0


def test_cyclic_garbage_made_inside_the_block_is_collected_automatically():
    import weakref

    class Node:
        pass

    with frozen_heap():
        assert gc.isenabled() and gc.get_threshold()[0] == YOUNG_THRESHOLD
        node = Node()
        node.self = node
        gone = weakref.ref(node)
        del node
        held = [[] for _ in range(3 * YOUNG_THRESHOLD)]  # enough new containers to set off a collection
        assert gone() is None  # without gc.collect(): the collector still runs inside the block
        del held


def test_a_heap_something_else_froze_is_left_frozen():
    gc.freeze()
    frozen = gc.get_freeze_count()
    with frozen_heap():
        pass
    # Thawing would empty the permanent generation; objects freed or made meanwhile move it a little.
    assert gc.get_freeze_count() > frozen // 2


def test_young_objects_are_collected_less_often_inside_the_block_and_as_before_after_it():
    before = gc.get_threshold()
    with frozen_heap():
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
    assert gc.get_threshold() == before


def test_a_collector_set_to_collect_even_less_often_is_left_so():
    before = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD * 2, before[1], before[2])
    try:
        with frozen_heap():
            assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2
    finally:
        gc.set_threshold(*before)


def test_an_inner_block_leaves_the_young_threshold_raised_until_the_outer_one_ends():
    before = gc.get_threshold()
    with frozen_heap():
        with frozen_heap():
            pass
        assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    assert gc.get_threshold() == before


def test_the_young_threshold_is_restored_when_the_block_raises():
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), frozen_heap():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before
