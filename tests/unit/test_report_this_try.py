"""What the report reads: only what prepare and the collect tasks produced in this try of the run."""

from __future__ import annotations

import re

import pytest
from airflow.sdk.exceptions import AirflowException
from airflow.utils.state import TaskInstanceState

from bedrock_batch.pipeline_operators import (
    COLLECT_TASK,
    ON_DEMAND_TASK,
    PLAN_KEY,
    PREPARE_TASK,
    collected_outcomes,
    on_demand_outcome,
    plan_of_this_try,
)

DAG_ID = "summarize_calls"
RUN_ID = "backfill__2026-11-20T00:00:00+00:00"
EARLIER_PLAN = {"jobs": [{"job_name": "summarize-calls-j001"}], "records": 200}


class FakeTaskInstance:
    """Answers ``get_task_states`` and ``xcom_pull`` as the Task SDK does, from states and XComs.

    ``states`` is keyed as Airflow keys them: ``prepare``, and ``batch_job.collect_<map index>``.
    """

    def __init__(self, states: dict[str, object], xcoms: dict[tuple[str, int | None], object]) -> None:
        self.states = states
        self.xcoms = xcoms

    def get_task_states(self, *, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict:
        assert (dag_id, run_ids) == (DAG_ID, [RUN_ID])
        (task_id,) = task_ids
        mine = {key: state for key, state in self.states.items() if re.fullmatch(rf"{task_id}(_\d+)?", key)}
        return {RUN_ID: mine} if mine else {}

    def xcom_pull(self, *, task_ids: str, key: str = "return_value", map_indexes=None, default=None):
        assert key == (PLAN_KEY if task_ids == PREPARE_TASK else "return_value")
        if map_indexes is None:
            return self.xcoms.get((task_ids, None), default)
        return [self.xcoms.get((task_ids, index), default) for index in map_indexes]


def prepared(state: object, plan: dict | None = EARLIER_PLAN) -> FakeTaskInstance:
    return FakeTaskInstance({PREPARE_TASK: state} if state is not None else {}, {(PREPARE_TASK, None): plan})


def test_the_plan_of_a_prepare_that_succeeded_in_this_try_is_read():
    assert plan_of_this_try(prepared(TaskInstanceState.SUCCESS), DAG_ID, RUN_ID) == EARLIER_PLAN


@pytest.mark.parametrize("state", [TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED, "removed"])
def test_a_plan_left_by_an_earlier_try_is_not_read_when_prepare_did_not_succeed(state):
    expected = re.escape(f"prepare did not succeed in this try of run {RUN_ID} (its state: {state})")
    with pytest.raises(AirflowException, match=expected):
        plan_of_this_try(prepared(state), DAG_ID, RUN_ID)


def test_a_prepare_airflow_has_no_state_for_is_named_in_the_error():
    with pytest.raises(AirflowException, match=r"its state: None"):
        plan_of_this_try(prepared(None), DAG_ID, RUN_ID)


def test_a_prepare_that_succeeded_without_a_plan_is_an_error():
    with pytest.raises(AirflowException, match="left no plan"):
        plan_of_this_try(prepared("success", None), DAG_ID, RUN_ID)


def test_outcomes_of_collect_tasks_that_succeeded_in_this_try_are_read():
    ti = FakeTaskInstance(
        {f"{COLLECT_TASK}_0": TaskInstanceState.SUCCESS, f"{COLLECT_TASK}_1": "success"},
        {(COLLECT_TASK, 0): {"job_name": "j001"}, (COLLECT_TASK, 1): {"job_name": "j002"}},
    )

    outcomes = collected_outcomes(ti, 2, dag_id=DAG_ID, run_id=RUN_ID)

    assert outcomes == [{"job_name": "j001"}, {"job_name": "j002"}]


def test_an_outcome_an_earlier_try_left_is_not_read_for_a_collect_that_did_not_run_in_this_try():
    ti = FakeTaskInstance(
        {f"{COLLECT_TASK}_0": "success", f"{COLLECT_TASK}_1": TaskInstanceState.UPSTREAM_FAILED},
        {(COLLECT_TASK, 0): {"job_name": "j001"}, (COLLECT_TASK, 1): {"job_name": "j002, earlier try"}},
    )

    outcomes = collected_outcomes(ti, 2, dag_id=DAG_ID, run_id=RUN_ID)

    assert outcomes == [{"job_name": "j001"}]


def test_a_job_whose_collect_succeeded_without_an_outcome_counts_as_not_collected():
    ti = FakeTaskInstance({f"{COLLECT_TASK}_0": "success"}, {})

    assert collected_outcomes(ti, 1, dag_id=DAG_ID, run_id=RUN_ID) == []


def test_the_on_demand_outcome_of_this_try_is_read():
    ti = FakeTaskInstance({ON_DEMAND_TASK: "success"}, {(ON_DEMAND_TASK, None): {"records": 12}})

    assert on_demand_outcome(ti, dag_id=DAG_ID, run_id=RUN_ID) == {"records": 12}


@pytest.mark.parametrize("state", ["skipped", "upstream_failed", None])
def test_an_on_demand_outcome_an_earlier_try_left_is_not_read(state):
    states = {ON_DEMAND_TASK: state} if state else {}
    ti = FakeTaskInstance(states, {(ON_DEMAND_TASK, None): {"records": 12, "from": "an earlier try"}})

    assert on_demand_outcome(ti, dag_id=DAG_ID, run_id=RUN_ID) is None
