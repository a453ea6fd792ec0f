"""What the report reads: only what prepare, the collect tasks and on-demand did in this try of the run."""

from __future__ import annotations

import re

import pytest
from airflow.sdk import DAG
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from airflow.utils.state import TaskInstanceState

from bedrock_batch.pipeline_operators import (
    COLLECT_TASK,
    ON_DEMAND_TASK,
    PREPARE_TASK,
    ReportOperator,
    collected_outcomes,
    on_demand_outcome,
    plan_of_this_try,
    task_states_this_try,
)
from tests.fixtures.task_instance import DAG_ID, OUTCOME, PLAN, RUN_ID, FakeTaskInstance

EARLIER_PLAN = {"jobs": [{"job_name": "summarize-calls-j001"}], "records": 200}


def prepared(state: object, plan: dict | None = EARLIER_PLAN) -> FakeTaskInstance:
    return FakeTaskInstance({PREPARE_TASK: state} if state is not None else {}, {(PREPARE_TASK, None): plan})


def states_of(ti: FakeTaskInstance) -> dict[str, str]:
    return task_states_this_try(ti, DAG_ID, RUN_ID)


def test_the_states_of_prepare_each_collect_task_and_on_demand_come_in_one_call():
    ti = FakeTaskInstance(
        {
            PREPARE_TASK: TaskInstanceState.SUCCESS,
            f"{COLLECT_TASK}_0": "success",
            f"{COLLECT_TASK}_1": TaskInstanceState.FAILED,
            ON_DEMAND_TASK: "skipped",
            "an_unrelated_task": "failed",
        },
        {},
    )

    assert states_of(ti) == {
        PREPARE_TASK: "success",
        f"{COLLECT_TASK}_0": "success",
        f"{COLLECT_TASK}_1": "failed",
        ON_DEMAND_TASK: "skipped",
    }
    assert ti.state_calls == 1


def test_the_plan_of_a_prepare_that_succeeded_in_this_try_is_read():
    ti = prepared(TaskInstanceState.SUCCESS)

    assert plan_of_this_try(ti, states_of(ti), RUN_ID) == EARLIER_PLAN


@pytest.mark.parametrize("state", [TaskInstanceState.FAILED, TaskInstanceState.UPSTREAM_FAILED, "removed"])
def test_a_plan_left_by_an_earlier_try_is_not_read_when_prepare_did_not_succeed(state):
    ti = prepared(state)
    expected = re.escape(f"prepare did not succeed in this try of run {RUN_ID} (its state: {state})")
    with pytest.raises(AirflowFailException, match=expected):  # final: no retry reads otherwise
        plan_of_this_try(ti, states_of(ti), RUN_ID)


def test_a_prepare_airflow_has_no_state_for_is_named_in_the_error():
    ti = prepared(None)
    with pytest.raises(AirflowException, match=r"its state: None"):
        plan_of_this_try(ti, states_of(ti), RUN_ID)


def test_a_prepare_that_succeeded_without_a_plan_is_an_error():
    ti = prepared("success", None)
    with pytest.raises(AirflowException, match="left no plan"):
        plan_of_this_try(ti, states_of(ti), RUN_ID)


def test_outcomes_of_collect_tasks_that_succeeded_in_this_try_are_read():
    ti = FakeTaskInstance(
        {f"{COLLECT_TASK}_0": TaskInstanceState.SUCCESS, f"{COLLECT_TASK}_1": "success"},
        {(COLLECT_TASK, 0): {"job_name": "j001"}, (COLLECT_TASK, 1): {"job_name": "j002"}},
    )

    outcomes = collected_outcomes(ti, 2, states_of(ti))

    assert outcomes == [{"job_name": "j001"}, {"job_name": "j002"}]


def test_an_outcome_an_earlier_try_left_is_not_read_for_a_collect_that_did_not_run_in_this_try():
    ti = FakeTaskInstance(
        {f"{COLLECT_TASK}_0": "success", f"{COLLECT_TASK}_1": TaskInstanceState.FAILED},
        {(COLLECT_TASK, 0): {"job_name": "j001"}, (COLLECT_TASK, 1): {"job_name": "j002, earlier try"}},
    )

    outcomes = collected_outcomes(ti, 2, states_of(ti))

    assert outcomes == [{"job_name": "j001"}]


def test_a_job_whose_collect_succeeded_without_an_outcome_counts_as_not_collected():
    ti = FakeTaskInstance({f"{COLLECT_TASK}_0": "success"}, {})

    assert collected_outcomes(ti, 1, states_of(ti)) == []


def test_the_on_demand_outcome_of_this_try_is_read():
    ti = FakeTaskInstance({ON_DEMAND_TASK: "success"}, {(ON_DEMAND_TASK, None): {"records": 12}})

    assert on_demand_outcome(ti, states_of(ti)) == {"records": 12}


@pytest.mark.parametrize("state", ["skipped", "upstream_failed", None])
def test_an_on_demand_outcome_an_earlier_try_left_is_not_read(state):
    states = {ON_DEMAND_TASK: state} if state else {}
    ti = FakeTaskInstance(states, {(ON_DEMAND_TASK, None): {"records": 12, "from": "an earlier try"}})

    assert on_demand_outcome(ti, states_of(ti)) is None


# -- the report task itself ------------------------------------------------------------------------


class WarehouseSpy:
    """Notes the runs whose days the report frees."""

    def __init__(self) -> None:
        self.released: list[str] = []

    def release_window(self, *, run_id: str, prompt_version: str) -> None:
        self.released.append(run_id)


def report_task() -> tuple[ReportOperator, WarehouseSpy]:
    with DAG(DAG_ID, schedule=None):
        task = ReportOperator(task_id="report", pipeline=DAG_ID)
    task.__dict__["warehouse"] = spy = WarehouseSpy()  # the cached_property, answered
    return task, spy


def test_the_report_of_a_try_whose_tasks_all_succeeded_frees_the_runs_days():
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", f"{COLLECT_TASK}_0": "success", ON_DEMAND_TASK: "skipped"},
        {(PREPARE_TASK, None): PLAN, (COLLECT_TASK, 0): OUTCOME},
    )
    task, warehouse = report_task()

    summary = task.execute({"ti": ti, "run_id": RUN_ID})

    assert (summary["jobs_collected"], summary["summarized"]) == (1, 196)
    assert warehouse.released == [RUN_ID]
    assert ti.state_calls == 1


def test_the_report_does_not_count_an_earlier_trys_outcome_of_a_collect_that_never_ran():
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", ON_DEMAND_TASK: "skipped"},
        {(PREPARE_TASK, None): PLAN, (COLLECT_TASK, 0): OUTCOME},
    )
    task, warehouse = report_task()

    with pytest.raises(AirflowFailException, match="1 of 1 jobs were not collected"):
        task.execute({"ti": ti, "run_id": RUN_ID})
    assert warehouse.released == []


def test_a_planned_on_demand_batch_that_did_not_succeed_fails_the_report_and_keeps_the_days():
    plan = {**PLAN, "jobs": [], "on_demand": {"records_s3_uri": "s3://in/on_demand.jsonl", "records": 12}}
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", ON_DEMAND_TASK: TaskInstanceState.FAILED},
        {(PREPARE_TASK, None): plan, (ON_DEMAND_TASK, None): {"records": 12, "from": "an earlier try"}},
    )
    task, warehouse = report_task()

    with pytest.raises(
        AirflowFailException, match="run_on_demand did not succeed in this try: its 12 records"
    ):
        task.execute({"ti": ti, "run_id": RUN_ID})
    assert warehouse.released == []


def test_refused_on_demand_requests_fail_the_report_naming_them_after_freeing_the_days():
    plan = {**PLAN, "jobs": [], "on_demand": {"records_s3_uri": "s3://in/on_demand.jsonl", "records": 12}}
    refused = {"records": 12, "summarized": 2, "refused": 10, "refusal": "AccessDeniedException: no"}
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", ON_DEMAND_TASK: "success"},
        {(PREPARE_TASK, None): plan, (ON_DEMAND_TASK, None): refused},
    )
    task, warehouse = report_task()

    with pytest.raises(
        AirflowFailException,
        match=r"refused the on-demand requests \(AccessDeniedException: no\): 10 records",
    ):
        task.execute({"ti": ti, "run_id": RUN_ID})
    assert warehouse.released == [RUN_ID]  # every record is loaded or queued for the next run


@pytest.mark.parametrize("fail_on_partial", [True, False])
def test_a_partially_completed_job_fails_the_report_only_under_fail_on_partial(fail_on_partial):
    from bedrock_batch.config import PIPELINES_DIR, load_pipeline

    partial = {**OUTCOME, "status": "PartiallyCompleted", "summarized": 150, "not_processed": 46}
    ti = FakeTaskInstance(
        {PREPARE_TASK: "success", f"{COLLECT_TASK}_0": "success", ON_DEMAND_TASK: "skipped"},
        {(PREPARE_TASK, None): PLAN, (COLLECT_TASK, 0): partial},
    )
    task, warehouse = report_task()
    config = load_pipeline(PIPELINES_DIR / f"{DAG_ID}.yaml")
    jobs = config.jobs.model_copy(update={"fail_on_partial": fail_on_partial})
    task.__dict__["config"] = config.model_copy(update={"jobs": jobs})

    if fail_on_partial:
        with pytest.raises(AirflowFailException, match="PartiallyCompleted"):
            task.execute({"ti": ti, "run_id": RUN_ID})
    else:
        assert task.execute({"ti": ti, "run_id": RUN_ID})["summarized"] == 150
    assert warehouse.released == [RUN_ID]  # collected either way: its unprocessed records are queued
