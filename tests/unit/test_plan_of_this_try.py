"""The report reads prepare's plan only when prepare succeeded in this try of the run."""

from __future__ import annotations

import re

import pytest
from airflow.sdk.exceptions import AirflowException
from airflow.utils.state import TaskInstanceState

from bedrock_batch.pipeline_operators import PLAN_KEY, PREPARE_TASK, plan_of_this_try

DAG_ID = "summarize_calls"
RUN_ID = "backfill__2026-11-20T00:00:00+00:00"
EARLIER_PLAN = {"jobs": [{"job_name": "summarize-calls-j001"}], "records": 200}


class FakeTaskInstance:
    """Answers ``get_task_states`` and ``xcom_pull`` as the Task SDK does, from a state and an XCom."""

    def __init__(self, prepare_state: object, plan: dict | None) -> None:
        self.prepare_state = prepare_state
        self.plan = plan

    def get_task_states(self, *, dag_id: str, task_ids: list[str], run_ids: list[str]) -> dict:
        assert (dag_id, task_ids, run_ids) == (DAG_ID, [PREPARE_TASK], [RUN_ID])
        return {RUN_ID: {PREPARE_TASK: self.prepare_state}} if self.prepare_state is not None else {}

    def xcom_pull(self, *, task_ids: str, key: str) -> dict | None:
        assert (task_ids, key) == (PREPARE_TASK, PLAN_KEY)
        return self.plan


def test_the_plan_of_a_prepare_that_succeeded_in_this_try_is_read():
    ti = FakeTaskInstance(TaskInstanceState.SUCCESS, EARLIER_PLAN)

    assert plan_of_this_try(ti, DAG_ID, RUN_ID) == EARLIER_PLAN


@pytest.mark.parametrize("state", [TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED, "removed"])
def test_a_plan_left_by_an_earlier_try_is_not_read_when_prepare_did_not_succeed(state):
    ti = FakeTaskInstance(state, EARLIER_PLAN)

    expected = re.escape(f"prepare did not succeed in this try of run {RUN_ID} (its state: {state})")
    with pytest.raises(AirflowException, match=expected):
        plan_of_this_try(ti, DAG_ID, RUN_ID)


def test_a_prepare_airflow_has_no_state_for_is_named_in_the_error():
    ti = FakeTaskInstance(None, EARLIER_PLAN)

    with pytest.raises(AirflowException, match=r"its state: None"):
        plan_of_this_try(ti, DAG_ID, RUN_ID)


def test_a_prepare_that_succeeded_without_a_plan_is_an_error():
    ti = FakeTaskInstance("success", None)

    with pytest.raises(AirflowException, match="left no plan"):
        plan_of_this_try(ti, DAG_ID, RUN_ID)
