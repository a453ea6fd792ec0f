"""BedrockBatchJobTrigger.run() on every outcome, against the stand-in over aiobotocore."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from structlog.testing import capture_logs

from bedrock_batch import triggers
from bedrock_batch.triggers import BedrockBatchJobTrigger
from tests.integration.bedrock.support import RECORDS, run_trigger, wait_for_status, wait_terminal

FAST = {"poll_interval": 0.02, "max_poll_interval": 0.1, "jitter": 0.2}


def trigger_for(job_arn: str, **kwargs) -> BedrockBatchJobTrigger:
    return BedrockBatchJobTrigger(job_arn=job_arn, **{**FAST, **kwargs})


@pytest.mark.parametrize(
    ("fault", "outcome", "job_status"),
    [
        (None, "success", "Completed"),
        ("partial=40", "partial", "PartiallyCompleted"),
        ("fail", "failed", "Failed"),
        ("expire", "failed", "Expired"),
    ],
)
def test_trigger_yields_one_event_per_outcome(new_job, fault, outcome, job_status):
    job_arn = new_job(fault=fault)
    events = run_trigger(trigger_for(job_arn))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == outcome
    assert payload["job_status"] == job_status
    assert payload["job_arn"] == job_arn


def test_trigger_event_carries_counts_of_a_partial_job(new_job):
    payload = run_trigger(trigger_for(new_job(fault="partial=40")))[0].payload
    assert payload["total_records"] == RECORDS
    assert payload["processed_records"] == 40
    assert payload["success_records"] + payload["error_records"] == 40


def test_trigger_event_carries_the_service_failure_message(new_job):
    payload = run_trigger(trigger_for(new_job(fault="fail")))[0].payload
    assert "internal error" in payload["message"]


def test_trigger_reports_a_stopped_job_as_failed(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    bedrock_hook.stop_job(job_arn)
    payload = run_trigger(trigger_for(job_arn))[0].payload
    assert (payload["status"], payload["job_status"]) == ("failed", "Stopped")


class RecordedSleeps:
    """Stands in for the trigger module's ``asyncio`` and ``time``: its pauses are recorded, and with
    ``real=False`` not slept but added to a clock of its own, so a spec reads the pause sequence and
    the progress logs without waiting for them (and without timing anything). After ``stop_after``
    pauses it raises :class:`EnoughPauses`, which ends ``run()``."""

    def __init__(self, monkeypatch, *, real: bool, stop_after: int | None = None) -> None:
        self.pauses: list[float] = []
        self.now = 1000.0
        self.real = real
        self.stop_after = stop_after
        real_sleep = asyncio.sleep

        async def sleep(pause: float) -> None:
            self.pauses.append(pause)
            if self.stop_after is not None and len(self.pauses) >= self.stop_after:
                raise EnoughPauses
            if self.real:
                await real_sleep(pause)
            else:
                self.now += pause
                await real_sleep(0)

        module = SimpleNamespace(**vars(asyncio))
        module.sleep = sleep
        monkeypatch.setattr(triggers, "asyncio", module)
        if not real:
            monkeypatch.setattr(triggers, "time", SimpleNamespace(monotonic=lambda: self.now))


class EnoughPauses(Exception):
    pass


def test_trigger_gives_up_at_the_deadline_not_at_its_next_poll(new_job, bedrock_hook, monkeypatch):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    sleeps = RecordedSleeps(monkeypatch, real=True)
    # Seconds enough for the client and the first poll on a loaded machine: the trigger must have
    # paused before the deadline for the spec to say anything.
    deadline = (datetime.now(UTC) + timedelta(seconds=3)).isoformat()
    # A minute between polls: without cutting the pause to the time left, run_trigger times out.
    trigger = trigger_for(job_arn, deadline=deadline, poll_interval=60, max_poll_interval=60)

    payload = run_trigger(trigger)[0].payload

    assert (payload["status"], payload["job_status"]) == ("deadline", "Scheduled")
    assert sleeps.pauses and all(pause <= 3 for pause in sleeps.pauses)


def test_trigger_with_a_past_deadline_still_reports_a_finished_job(new_job, bedrock_hook):
    job_arn = new_job()
    wait_terminal(bedrock_hook, job_arn)
    deadline = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert run_trigger(trigger_for(job_arn, deadline=deadline))[0].payload["status"] == "success"


def test_trigger_reports_an_unknown_job_as_error(aws_env, local_aws_clean):
    arn = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/zzzzzzzzzzzz"
    payload = run_trigger(trigger_for(arn))[0].payload
    assert payload["status"] == "error"
    assert "ResourceNotFound" in payload["message"]
    assert payload["error_code"] == "ResourceNotFoundException"


def test_trigger_rides_out_transient_errors(new_job, local_aws, monkeypatch):
    # A connection whose client does not retry: every 500 reaches the trigger, which must retry.
    conn = {
        "conn_type": "aws",
        "extra": {
            "endpoint_url": local_aws.endpoint_url,
            "region_name": "us-east-1",
            "config_kwargs": {"retries": {"mode": "standard", "max_attempts": 0}},
        },
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NO_RETRY", json.dumps(conn))
    job_arn = new_job()
    local_aws.admin.set_faults(internal_error={"GetModelInvocationJob": 3})
    payload = run_trigger(trigger_for(job_arn, aws_conn_id="aws_no_retry"))[0].payload
    assert payload["status"] == "success"
    assert local_aws.admin.faults()["internal_error"]["GetModelInvocationJob"] == 0


# Airflow 3's LoggingMixin.log is a structlog logger that does not go through the stdlib logging
# caplog hooks into; structlog's capture_logs() sees exactly what the triggerer would write.
def test_trigger_logs_progress_on_status_changes_without_record_text(new_job):
    job_arn = new_job()
    with capture_logs() as logs:
        run_trigger(trigger_for(job_arn))
    lines = [entry["event"] for entry in logs if job_arn in entry["event"] and " is " in entry["event"]]
    assert lines, "no progress line"
    assert f"Completed: {RECORDS} of {RECORDS} records processed ({RECORDS} succeeded, 0 failed)" in lines[-1]
    assert not any("Summarise call" in str(entry) for entry in logs)


def test_trigger_logs_progress_at_least_every_interval_while_nothing_changes(
    new_job, bedrock_hook, monkeypatch
):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    sleeps = RecordedSleeps(monkeypatch, real=False, stop_after=15)
    trigger = trigger_for(
        job_arn, poll_interval=0.05, max_poll_interval=0.4, backoff=2, jitter=0, progress_log_interval=1.0
    )
    with capture_logs() as logs, pytest.raises(EnoughPauses):
        run_trigger(trigger)
    scheduled = [entry for entry in logs if "is Scheduled" in entry["event"]]
    # Polls at 0, 0.05, 0.15, 0.35, 0.75, then every 0.4 s: logged at the first (a change), then
    # at the first poll 1 s or more after the last line: 1.15, 2.35, 3.55, 4.75.
    assert len(sleeps.pauses) == 15
    assert len(scheduled) == 5


def test_trigger_backs_off_between_floor_and_ceiling(new_job, local_aws, bedrock_hook, monkeypatch):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    local_aws.admin.clear_calls()
    sleeps = RecordedSleeps(monkeypatch, real=False, stop_after=7)
    trigger = trigger_for(job_arn, poll_interval=0.05, max_poll_interval=0.4, backoff=2, jitter=0)

    with pytest.raises(EnoughPauses):
        run_trigger(trigger)

    assert sleeps.pauses == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.4, 0.4, 0.4])
    assert local_aws.calls().count("bedrock:GetModelInvocationJob") == 7


def test_trigger_pauses_are_jittered_within_floor_and_ceiling(new_job, bedrock_hook, monkeypatch):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    sleeps = RecordedSleeps(monkeypatch, real=False, stop_after=30)

    with pytest.raises(EnoughPauses):
        run_trigger(trigger_for(job_arn, poll_interval=0.05, max_poll_interval=0.4, backoff=2, jitter=0.2))

    assert all(0.05 <= pause <= 0.4 for pause in sleeps.pauses)
    assert len(set(sleeps.pauses[3:])) > 1  # stretched or shrunk at random, not one fixed pause


def test_on_kill_stops_the_job(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(trigger_for(job_arn).on_kill())
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


def served_task(trigger: BedrockBatchJobTrigger) -> BedrockBatchJobTrigger:
    """The trigger as a triggerer runs it: for one (mapped) task instance."""
    trigger.task_instance = SimpleNamespace(
        dag_id="summarize_calls", task_id="batch_job.wait", run_id="scheduled__2026-11-20", map_index=0
    )
    return trigger


def test_on_kill_stops_the_job_once_its_task_has_left_the_deferred_state(new_job, bedrock_hook, monkeypatch):
    asked = []
    monkeypatch.setattr(triggers, "task_instance_state", lambda *ti: asked.append(ti) or "failed")
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(served_task(trigger_for(job_arn)).on_kill())
    assert asked == [("summarize_calls", "batch_job.wait", "scheduled__2026-11-20", 0)]
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


def test_on_kill_still_stops_the_job_when_the_triggerer_cancels_it_again_meanwhile(
    new_job, bedrock_hook, monkeypatch
):
    """Until on_kill returns, each triggerer sync cancels the trigger's task again (~1 s)."""

    def slow_answer(*ti):
        time.sleep(0.5)
        return "failed"

    monkeypatch.setattr(triggers, "task_instance_state", slow_answer)
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})

    async def cancelled_meanwhile() -> None:
        killing = asyncio.ensure_future(served_task(trigger_for(job_arn)).on_kill())
        await asyncio.sleep(0.1)
        killing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await killing
        if triggers._STOPPING:  # the shielded stop goes on; wait for it (bounded)
            await asyncio.wait(list(triggers._STOPPING), timeout=60)

    asyncio.run(cancelled_meanwhile())
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


@pytest.mark.parametrize(
    ("answer", "state"),
    [
        ({"r": {"batch_job.wait_0": "deferred"}}, "deferred"),  # a mapped instance's key
        ({"r": {"batch_job.wait_0": None}}, None),  # cleared
        ({}, None),  # the run (or the task instance) was deleted: nobody waits on the job
    ],
)
def test_the_task_state_is_read_from_airflows_answer(monkeypatch, answer, state):
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(lambda **_: answer))
    assert triggers.task_instance_state("summarize_calls", "batch_job.wait", "r", 0) == state


def test_on_kill_leaves_the_job_running_when_its_task_still_waits_on_it(new_job, bedrock_hook, monkeypatch):
    """Airflow 3.3 cancels a trigger handed to another triggerer as if a user had acted (#73454)."""
    monkeypatch.setattr(triggers, "task_instance_state", lambda *ti: "deferred")
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(served_task(trigger_for(job_arn)).on_kill())
    assert bedrock_hook.get_job(job_arn)["status"] == "Scheduled"


def test_on_kill_leaves_the_job_running_and_says_how_to_stop_it_when_airflow_cannot_be_asked(
    new_job, bedrock_hook, monkeypatch
):
    asked: list[tuple] = []

    def unreachable(*ti):
        asked.append(ti)
        raise ConnectionError("supervisor gone")

    monkeypatch.setattr(triggers, "task_instance_state", unreachable)
    monkeypatch.setattr(triggers, "_STATE_LOOKUP_PAUSE", 0.0)
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    with capture_logs() as logs:
        asyncio.run(served_task(trigger_for(job_arn)).on_kill())
    assert bedrock_hook.get_job(job_arn)["status"] == "Scheduled"
    assert any(f"action=stop and job_arn={job_arn}" in entry["event"] for entry in logs)
    assert len(asked) == triggers._STATE_LOOKUP_TRIES


def test_on_kill_asks_airflow_again_when_its_first_answer_does_not_come(new_job, bedrock_hook, monkeypatch):
    """A busy or restarting API server must not leave running a job a user asked to stop."""
    answers = iter([ConnectionError("api-server restarting"), "failed"])

    def flaky(*ti):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(triggers, "task_instance_state", flaky)
    monkeypatch.setattr(triggers, "_STATE_LOOKUP_PAUSE", 0.0)
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(served_task(trigger_for(job_arn)).on_kill())
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


def test_on_kill_leaves_the_job_alone_without_stop_on_kill(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(trigger_for(job_arn, stop_on_kill=False).on_kill())
    assert bedrock_hook.get_job(job_arn)["status"] == "Scheduled"


def test_cleanup_never_stops_the_job(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    asyncio.run(trigger_for(job_arn).cleanup())
    assert bedrock_hook.get_job(job_arn)["status"] == "Scheduled"


def test_serialize_round_trip_rebuilds_an_equal_trigger():
    trigger = BedrockBatchJobTrigger(
        job_arn="arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456",
        region_name="eu-west-1",
        deadline="2026-01-02T03:04:05+00:00",
        stop_on_kill=False,
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "bedrock_batch.triggers.BedrockBatchJobTrigger"
    assert BedrockBatchJobTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"poll_interval": 0},
        {"poll_interval": 10, "max_poll_interval": 5},
        {"backoff": 0.5},
        {"jitter": 1.0},
        {"deadline": "tomorrow"},
    ],
)
def test_trigger_rejects_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        BedrockBatchJobTrigger(job_arn="arn", **kwargs)
