"""Marking a deferred wait failed stops its job: the real triggerer asks Airflow for the task's state.

Runs after the other end-to-end tests (MUTATES_STACK): its run leaves the untouched seeded day's
records queued, which any later run would read.
"""

from __future__ import annotations

import datetime as dt

import pytest

from tests.e2e.conftest import DAG_ID, params_conf

pytestmark = [pytest.mark.airflow_stack, pytest.mark.timeout(600)]

MUTATES_STACK = True
WAIT = "batch_job.wait"


def state(api, instance: str) -> str | None:
    """The task instance's state; None until the mapped task has expanded."""
    response = api.client.get(instance)
    return response.json()["state"] if response.status_code == 200 else None


def triggerer_lines(stack, job_arn: str, last: int = 40) -> str:
    """The trigger's and the triggerer's log lines about ``job_arn`` or on_kill, the last ``last``."""
    logs = stack.airflow_home / "logs"
    paths = sorted({*logs.rglob("*.log.trigger*"), *logs.rglob("triggerer.log")})
    lines = [
        line
        for path in paths
        for line in path.read_text(errors="replace").splitlines()
        if job_arn in line or "on_kill" in line or "state of" in line
    ]
    return "triggerer log:\n" + "\n".join(lines[-last:]) if lines else f"no trigger log lines under {logs}"


def polls_of_jobs(aws) -> int:
    return sum(call["action"] == "bedrock:GetModelInvocationJob" for call in aws.calls())


def test_marking_the_deferred_wait_failed_stops_its_job(airflow_stack):
    api, aws = airflow_stack.api, airflow_stack.aws_admin
    day = airflow_stack.seeded_days[0]  # the day no other test runs
    jobs_before = len(aws.jobs())
    aws.set_faults(job_outcome="stick")
    try:
        conf = {
            **params_conf(api),
            "window_start": day.isoformat(),
            "window_end": (day + dt.timedelta(days=1)).isoformat(),
        }
        api.patch(f"/dags/{DAG_ID}", {"is_paused": False})
        run = api.post(
            f"/dags/{DAG_ID}/dagRuns",
            {"dag_run_id": f"stop-on-kill-{day}", "logical_date": None, "conf": conf},
        )
        instance = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}/taskInstances/{WAIT}/0"
        api.wait_for(
            "the wait to defer", lambda: state(api, instance) == "deferred", timeout=180, interval=1.0
        )
        (job,) = aws.jobs()[jobs_before:]
        assert job["status"] not in ("Stopping", "Stopped")
        # A task marked failed before the triggerer has taken up its trigger never reaches on_kill:
        # wait for the trigger's first poll (the sensor polled once before it deferred).
        polls = polls_of_jobs(aws)
        api.wait_for("the trigger to poll", lambda: polls_of_jobs(aws) > polls, timeout=60, interval=0.5)

        api.patch(instance, {"new_state": "failed"})

        try:
            api.wait_for(
                "the job to stop",
                lambda: aws.jobs()[jobs_before]["status"] in ("Stopping", "Stopped"),
                timeout=60,
                interval=1.0,
            )
        except AssertionError as timed_out:
            # What the trigger decided (or that on_kill never came) is in the triggerer's log.
            raise AssertionError(f"{timed_out}\n{triggerer_lines(airflow_stack, job['job_arn'])}") from None
    finally:
        aws.reset_faults()
