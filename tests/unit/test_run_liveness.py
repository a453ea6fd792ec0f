"""How the prepare task asks Airflow whether the run holding its days is still in flight."""

from __future__ import annotations

import pytest
from airflow.utils.state import DagRunState

from bedrock_batch.pipeline_operators import run_liveness


class FakeTaskInstance:
    """Answers ``get_dagrun_state`` as the Task SDK does, from a table of run states."""

    def __init__(self, states: dict[str, object]) -> None:
        self.states = states
        self.asked: list[tuple[str, str]] = []

    def get_dagrun_state(self, dag_id: str, run_id: str) -> object:
        self.asked.append((dag_id, run_id))
        state = self.states[run_id]
        if isinstance(state, Exception):
            raise state
        return state


@pytest.mark.parametrize(
    ("state", "live"),
    [
        (DagRunState.QUEUED, True),
        (DagRunState.RUNNING, True),
        (DagRunState.SUCCESS, False),
        (DagRunState.FAILED, False),
        ("running", True),
        ("failed", False),
    ],
)
def test_a_queued_or_running_run_is_live_and_a_finished_one_is_not(state, live):
    ti = FakeTaskInstance({"scheduled__1": state})

    assert run_liveness(ti, "summarize_calls")("scheduled__1") is live
    assert ti.asked == [("summarize_calls", "scheduled__1")]


def test_a_run_airflow_cannot_answer_for_is_unknown():
    ti = FakeTaskInstance({"deleted__1": RuntimeError("DagRun not found")})

    assert run_liveness(ti, "summarize_calls")("deleted__1") is None
