"""How a load cuts its rows into batches for the writer thread (warehouse._batches_when)."""

from __future__ import annotations

from bedrock_batch.warehouse import _batches_when


def never() -> bool:
    return False


def always() -> bool:
    return True


def test_a_busy_writer_gets_full_batches():
    batches = list(_batches_when(range(25), 10, step=2, ready=never))

    assert [len(batch) for batch in batches] == [10, 10, 5]


def test_a_free_writer_gets_what_has_been_read_one_step_at_a_time():
    batches = list(_batches_when(range(25), 10, step=4, ready=always))

    assert [len(batch) for batch in batches] == [4, 4, 4, 4, 4, 4, 1]


def test_a_writer_that_frees_up_gets_what_piled_up_meanwhile():
    answers = iter([False, False, True, False, True])

    batches = list(_batches_when(range(10), 100, step=2, ready=lambda: next(answers)))

    assert [len(batch) for batch in batches] == [6, 4]


def test_a_batch_never_exceeds_the_size_even_when_steps_do_not_divide_it():
    batches = list(_batches_when(range(25), 10, step=4, ready=never))

    assert [len(batch) for batch in batches] == [10, 10, 5]


def test_every_item_is_in_one_batch_in_order():
    calls = iter(range(10_000))

    batches = list(_batches_when(iter(range(1001)), 64, step=7, ready=lambda: next(calls) % 3 == 0))

    assert [item for batch in batches for item in batch] == list(range(1001))
    assert all(0 < len(batch) <= 64 for batch in batches)
