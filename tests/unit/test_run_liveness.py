"""How the prepare task tells whether the run holding its days is still in flight."""

from __future__ import annotations

import pytest
from airflow.utils.state import DagRunState

from bedrock_batch.pipeline_operators import run_liveness

DAG_ID = "summarize_calls"


class FakeTaskInstance:
    """Answers ``get_dr_count`` / ``get_dagrun_state`` as the Task SDK does, from a table of run states."""

    def __init__(self, states: dict[str, object]) -> None:
        self.states = states

    def get_dr_count(self, dag_id: str, run_ids: list[str]) -> int:
        assert dag_id == DAG_ID
        state = self.states.get(run_ids[0])
        if isinstance(state, Exception):
            raise state
        return int(state is not None)

    def get_dagrun_state(self, dag_id: str, run_id: str) -> object:
        return self.states[run_id]


def liveness(states: dict[str, object], jobs: dict[str, list[str]] | Exception | None = None):
    asked: list[str] = []

    def active_jobs(run_id: str) -> list[str]:
        asked.append(run_id)
        if isinstance(jobs, Exception):
            raise jobs
        return (jobs or {}).get(run_id, [])

    return run_liveness(FakeTaskInstance(states), DAG_ID, active_jobs), asked


@pytest.mark.parametrize("state", [DagRunState.QUEUED, DagRunState.RUNNING, "running"])
def test_a_queued_or_running_run_is_live_whatever_bedrock_says(state):
    is_live, asked = liveness({"scheduled__1": state})

    assert is_live("scheduled__1") is True
    assert asked == []


@pytest.mark.parametrize("state", [DagRunState.SUCCESS, DagRunState.FAILED, "failed"])
def test_a_finished_run_with_no_job_left_in_bedrock_is_over(state):
    is_live, asked = liveness({"scheduled__1": state})

    assert is_live("scheduled__1") is False
    assert asked == ["scheduled__1"]


def test_a_failed_run_whose_job_still_runs_in_bedrock_is_live():
    is_live, _ = liveness({"scheduled__1": DagRunState.FAILED}, {"scheduled__1": ["summarize-calls-j001"]})

    assert is_live("scheduled__1") is True


def test_a_run_airflow_does_not_have_is_unknown_unless_its_jobs_still_run():
    """Deleted, or another deployment's run that may be staging right now: the claim's TTL decides."""
    is_live, _ = liveness({}, {"other__2": ["summarize-calls-j001"]})

    assert is_live("other__1") is None
    assert is_live("other__2") is True


@pytest.mark.parametrize(
    ("states", "jobs"),
    [
        ({"scheduled__1": RuntimeError("API server unreachable")}, None),
        ({"scheduled__1": DagRunState.FAILED}, RuntimeError("ThrottlingException")),
    ],
)
def test_a_run_nobody_could_answer_for_is_unknown(states, jobs):
    is_live, _ = liveness(states, jobs)

    assert is_live("scheduled__1") is None
