"""BedrockBatchJobSensor: deferral, completion paths, reschedule fallback and on_kill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from bedrock_batch.errors import JobFailedError
from bedrock_batch.sensors import BedrockBatchJobSensor, BedrockJobFailedException
from bedrock_batch.triggers import BedrockBatchJobTrigger
from tests.integration.bedrock.support import RECORDS, run_trigger, wait_for_status, wait_terminal

ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


def sensor(job_arn: str = ARN, **kwargs) -> BedrockBatchJobSensor:
    kwargs.setdefault("poll_interval", 0.02)
    kwargs.setdefault("max_poll_interval", 0.1)
    return BedrockBatchJobSensor(task_id="wait", job_arn=job_arn, **kwargs)


def test_sensor_defers_with_a_trigger_bounded_by_the_job_deadline(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    with pytest.raises(TaskDeferred) as deferred:
        sensor(job_arn).execute({})
    trigger = deferred.value.trigger
    assert isinstance(trigger, BedrockBatchJobTrigger)
    assert deferred.value.method_name == "execute_complete"
    expiration = bedrock_hook.get_job(job_arn)["jobExpirationTime"]
    deadline = datetime.fromisoformat(trigger.deadline)
    assert deadline == expiration + timedelta(hours=1)
    assert deferred.value.timeout > deadline - datetime.now(UTC)


def test_sensor_hands_its_wait_settings_and_stop_on_kill_to_the_trigger(new_job):
    job_arn = new_job(fault="stick")
    waiting = sensor(
        job_arn,
        aws_conn_id="aws_default",
        region_name="us-east-1",
        poll_interval=7,
        max_poll_interval=70,
        progress_log_interval=123,
        stop_on_kill=False,
    )
    with pytest.raises(TaskDeferred) as deferred:
        waiting.execute({})
    trigger = deferred.value.trigger
    assert (trigger.job_arn, trigger.aws_conn_id, trigger.region_name) == (
        job_arn,
        "aws_default",
        "us-east-1",
    )
    assert (trigger.poll_interval, trigger.max_poll_interval, trigger.progress_log_interval) == (7, 70, 123)
    assert trigger.stop_on_kill is False


def test_sensor_returns_at_once_for_a_job_already_completed(new_job, bedrock_hook):
    job_arn = new_job()
    wait_terminal(bedrock_hook, job_arn)
    result = sensor(job_arn).execute({})
    assert result["job_status"] == "Completed"
    assert result["success_records"] == RECORDS


def test_sensor_fails_without_retry_for_a_job_already_failed(new_job, bedrock_hook):
    job_arn = new_job(fault="fail")
    wait_terminal(bedrock_hook, job_arn)
    with pytest.raises(AirflowFailException, match="internal error"):
        sensor(job_arn).execute({})


def test_deferred_sensor_ends_with_the_trigger_event(new_job, bedrock_hook):
    # At the stand-in's test speed a healthy job ends within the first call, so hold one, defer,
    # then stop it: the event the trigger yields is what execute_complete receives on resume.
    job_arn = new_job(fault="stick")
    task = sensor(job_arn)
    with pytest.raises(TaskDeferred) as deferred:
        task.execute({})
    bedrock_hook.stop_job(job_arn)
    event = run_trigger(deferred.value.trigger)[0]
    with pytest.raises(BedrockJobFailedException, match="Stopped"):
        getattr(task, deferred.value.method_name)({}, event.payload)


def test_execute_complete_returns_a_small_summary_on_success():
    event = {"status": "success", "job_arn": ARN, "job_status": "Completed", "total_records": 5}
    event["raw"] = {"inputDataConfig": {"s3InputDataConfig": {"s3Uri": "s3://in/" + "x" * 5000}}}
    summary = sensor().execute_complete({}, event)
    assert set(summary) == {
        "job_arn",
        "job_name",
        "job_status",
        "message",
        "total_records",
        "processed_records",
        "success_records",
        "error_records",
    }
    assert (summary["job_arn"], summary["total_records"]) == (ARN, 5)


def test_execute_complete_warns_and_succeeds_on_partial():
    from structlog.testing import capture_logs

    event = {"status": "partial", "job_arn": ARN, "job_status": "PartiallyCompleted"}
    with capture_logs() as logs:
        assert sensor().execute_complete({}, event)["job_status"] == "PartiallyCompleted"
    warned = [entry for entry in logs if entry.get("log_level") == "warning"]
    assert any("ended PartiallyCompleted" in str(entry["event"]) for entry in warned), logs


def test_execute_complete_fails_on_partial_when_asked():
    event = {"status": "partial", "job_arn": ARN, "job_status": "PartiallyCompleted"}
    with pytest.raises(AirflowFailException, match="PartiallyCompleted"):
        sensor(fail_on_partial=True).execute_complete({}, event)


@pytest.mark.parametrize("job_status", ["Failed", "Stopped", "Expired"])
def test_execute_complete_fails_without_retry_with_the_service_message(job_status):
    event = {"status": "failed", "job_arn": ARN, "job_status": job_status, "message": "role cannot read"}
    with pytest.raises(BedrockJobFailedException, match=f"{job_status}: role cannot read") as caught:
        sensor().execute_complete({}, event)
    assert isinstance(caught.value, AirflowFailException)
    assert isinstance(caught.value, JobFailedError)


def test_execute_complete_fails_without_retry_at_the_deadline(new_job):
    job_arn = new_job(fault="stick")
    event = {"status": "deadline", "job_arn": job_arn, "job_status": "Scheduled", "message": "late"}
    with pytest.raises(AirflowFailException, match="late"):
        sensor(job_arn, deadline_margin=-timedelta(days=30)).execute_complete({}, event)


def test_execute_complete_waits_on_when_the_job_now_expires_later_than_the_wait_assumed(new_job):
    job_arn = new_job(fault="stick")  # its jobExpirationTime is days away
    event = {"status": "deadline", "job_arn": job_arn, "job_status": "Submitted", "message": "late"}
    with pytest.raises(TaskDeferred):
        sensor(job_arn).execute_complete({}, event)


def test_execute_complete_at_the_deadline_takes_the_end_of_a_job_that_ended_meanwhile(new_job, bedrock_hook):
    job_arn = new_job()
    wait_terminal(bedrock_hook, job_arn)
    event = {"status": "deadline", "job_arn": job_arn, "job_status": "InProgress", "message": "late"}
    result = sensor(job_arn, deadline_margin=-timedelta(days=30)).execute_complete({}, event)
    assert result["job_status"] == "Completed"


def test_execute_complete_error_is_retryable():
    event = {"status": "error", "job_arn": ARN, "message": "could not create the Bedrock client"}
    with pytest.raises(AirflowException, match="could not create") as caught:
        sensor().execute_complete({}, event)
    assert not isinstance(caught.value, AirflowFailException)


def test_execute_complete_fails_without_retry_when_bedrock_refuses_to_answer_for_the_job():
    event = {
        "status": "error",
        "job_arn": ARN,
        "message": "not found",
        "error_code": "ResourceNotFoundException",
    }
    with pytest.raises(AirflowFailException, match=f"{ARN} failed: not found"):
        sensor().execute_complete({}, event)


def test_execute_complete_leaves_access_denied_to_the_tasks_retries():
    event = {
        "status": "error",
        "job_arn": ARN,
        "message": "not authorized",
        "error_code": "AccessDeniedException",
    }
    with pytest.raises(AirflowException, match=f"{ARN} failed: not authorized") as caught:
        sensor().execute_complete({}, event)
    assert not isinstance(caught.value, AirflowFailException)


def test_access_denied_while_waiting_fails_the_poke_for_a_retry_and_the_next_poke_goes_on(
    new_job, bedrock_hook, local_aws_clean
):
    running = new_job(fault="stick")
    wait_for_status(bedrock_hook, running, {"Scheduled"})
    local_aws_clean.admin.set_faults(access_denied={"GetModelInvocationJob": 1})

    with pytest.raises(AirflowException, match=f"Reading Bedrock batch job {running} failed") as caught:
        sensor(running, deferrable=False).poke({})

    assert not isinstance(caught.value, AirflowFailException)
    assert "AccessDenied" in str(caught.value)
    assert sensor(running, deferrable=False).poke({}) is False


def test_a_job_bedrock_does_not_know_fails_the_sensor_without_retry_naming_it(aws_env, local_aws_clean):
    unknown = ARN.replace("abc123def456", "nosuchjob000")
    with pytest.raises(AirflowFailException, match=f"Reading Bedrock batch job {unknown} failed"):
        sensor(unknown).execute({})


def test_non_deferrable_sensor_uses_reschedule_mode():
    assert sensor(deferrable=False).mode == "reschedule"


def test_reschedule_pokes_back_off_from_the_poll_interval_to_its_ceiling():
    waiting = sensor(deferrable=False, poll_interval=30, max_poll_interval=600)
    started = datetime.now(UTC)
    pauses = [
        waiting._get_next_poke_interval(started, run_duration=lambda s=seconds: s, poke_count=1)
        for seconds in (0, 900, 86_400)  # since the wait began
    ]
    assert pauses[0] <= 60 and pauses[-1] == 600
    assert pauses == sorted(pauses)


def test_poke_is_false_while_the_job_runs_and_done_when_it_ends(new_job, bedrock_hook):
    running = new_job(fault="stick")
    wait_for_status(bedrock_hook, running, {"Scheduled"})
    assert sensor(running, deferrable=False).poke({}) is False
    done = new_job()
    wait_terminal(bedrock_hook, done)
    result = sensor(done, deferrable=False).poke({})
    assert isinstance(result, PokeReturnValue)
    assert result.is_done
    assert result.xcom_value["job_status"] == "Completed"


def test_poke_fails_past_the_job_deadline(new_job):
    job_arn = new_job(fault="stick")
    with pytest.raises(AirflowFailException, match="deadline"):
        sensor(job_arn, deferrable=False, deadline_margin=-timedelta(days=30)).poke({})


def test_on_kill_stops_the_job(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    sensor(job_arn, deferrable=False).on_kill()
    assert wait_terminal(bedrock_hook, job_arn)["status"] == "Stopped"


def test_on_kill_leaves_the_job_without_stop_on_kill(new_job, bedrock_hook):
    job_arn = new_job(fault="stick")
    wait_for_status(bedrock_hook, job_arn, {"Scheduled"})
    sensor(job_arn, deferrable=False, stop_on_kill=False).on_kill()
    assert bedrock_hook.get_job(job_arn)["status"] == "Scheduled"


def test_two_sensors_share_no_state():
    first, second = sensor(fail_on_partial=True), sensor()
    assert (first.fail_on_partial, second.fail_on_partial) == (True, False)
    assert "fail_on_partial" not in vars(BedrockBatchJobSensor)
