"""BedrockBatchJobSensor: wait for one Bedrock batch job without holding a worker slot.

Unlike the provider's sensor, PartiallyCompleted is not a failure by default (those records are
billed and their output must be read), the failure reason reaches the task log, progress is logged,
the wait is bounded by the job's own deadline rather than by retries, and nothing is stored on the
class.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from bedrock_batch.errors import JobFailedError
from bedrock_batch.job_status import (
    TERMINAL_STATUSES,
    WAIT_REFUSED_CODES,
    aws_error_code,
    job_deadline,
    job_progress,
)
from bedrock_batch.triggers import BedrockBatchJobTrigger, job_event

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bedrock_batch.hooks import BedrockBatchHook

_DEFER_GRACE = timedelta(minutes=10)
"""Extra time the task's defer timeout gives the trigger to report the deadline itself."""


class BedrockJobFailedException(JobFailedError, AirflowFailException):
    """The job ended Failed, Stopped or Expired: retrying the sensor cannot change that."""


class BedrockBatchJobSensor(BaseSensorOperator):
    """
    Wait until a Bedrock batch job ends; return its ARN, status and record counts.

    :param job_arn: the job to wait for (templated).
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: overrides the connection's region (templated).
    :param deferrable: wait on the triggerer (default). False falls back to ``reschedule`` mode,
        where each poke makes one GetModelInvocationJob call, the pokes backing off exponentially
        from ``poll_interval`` to ``max_poll_interval``.
    :param fail_on_partial: fail on PartiallyCompleted instead of warning and succeeding.
    :param poll_interval: shortest pause between polls, seconds (also the reschedule interval).
    :param max_poll_interval: longest pause between polls, seconds.
    :param progress_log_interval: log progress at least this often, seconds.
    :param stop_on_kill: stop the job when the task is killed. Deferred, the trigger decides (a user's
        action stops the job, a triggerer restart does not); in reschedule mode only a kill during a
        poke reaches ``on_kill``, whoever sends it (a user, or a worker shutting down).
    :param deadline_margin: time allowed after the job's expiration before giving up.
    """

    template_fields: Sequence[str] = ("job_arn", "region_name")
    ui_color = "#66c3ff"

    def __init__(
        self,
        *,
        job_arn: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        deferrable: bool = True,
        fail_on_partial: bool = False,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        progress_log_interval: float = 600.0,
        stop_on_kill: bool = True,
        deadline_margin: timedelta = timedelta(hours=1),
        **kwargs: Any,
    ) -> None:
        if not deferrable:
            kwargs.setdefault("mode", "reschedule")
            # Pokes grow from poll_interval to max_poll_interval, as the trigger's polls do: a day-long
            # job costs a few hundred task starts, not ~3,000.
            kwargs.setdefault("exponential_backoff", True)
            kwargs.setdefault("max_wait", timedelta(seconds=max_poll_interval))
        kwargs.setdefault("poke_interval", poll_interval)
        # The job's own deadline bounds the wait (checked on every poll); the sensor timeout is only
        # a backstop above the longest life a job can have (168 h timeout plus queueing).
        kwargs.setdefault("timeout", timedelta(days=14))
        super().__init__(**kwargs)
        self.job_arn = job_arn
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.deferrable = deferrable
        self.fail_on_partial = fail_on_partial
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.progress_log_interval = progress_log_interval
        self.stop_on_kill = stop_on_kill
        self.deadline_margin = deadline_margin

    @cached_property
    def hook(self) -> BedrockBatchHook:
        from bedrock_batch.hooks import BedrockBatchHook

        return BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        job = self._job()
        if job.get("status") in TERMINAL_STATUSES:
            return self.execute_complete(context, job_event(job))
        deadline = job_deadline(job, margin=self.deadline_margin)
        now = datetime.now(UTC)
        if now >= deadline:
            raise AirflowFailException(
                f"Bedrock batch job {self.job_arn} is still {job.get('status')} after its deadline {deadline}"
            )
        self._log_progress(job)
        self.defer(
            trigger=BedrockBatchJobTrigger(
                job_arn=self.job_arn,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
                deadline=deadline.isoformat(),
                progress_log_interval=self.progress_log_interval,
                stop_on_kill=self.stop_on_kill,
            ),
            method_name="execute_complete",
            timeout=deadline - now + _DEFER_GRACE,
        )

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """Reschedule mode: one GetModelInvocationJob per poke."""
        job = self._job()
        if job.get("status") in TERMINAL_STATUSES:
            return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, job_event(job)))
        deadline = job_deadline(job, margin=self.deadline_margin)
        if datetime.now(UTC) >= deadline:
            raise AirflowFailException(
                f"Bedrock batch job {self.job_arn} is still {job.get('status')} after its deadline {deadline}"
            )
        self._log_progress(job)
        return False

    def _job(self) -> dict[str, Any]:
        """GetModelInvocationJob; an error names the job, and one a retry cannot cure fails the task."""
        try:
            return self.hook.get_job(self.job_arn)
        except Exception as error:
            text = f"Reading Bedrock batch job {self.job_arn} failed: {error}"
            if aws_error_code(error) in WAIT_REFUSED_CODES:
                raise AirflowFailException(text) from error
            raise AirflowException(text) from error

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Turn the trigger's event (or a terminal job seen directly) into a result or a failure."""
        outcome = event.get("status")
        job_arn = event.get("job_arn") or self.job_arn
        message = event.get("message") or "no reason given"
        if outcome == "success":
            self.log.info("Bedrock batch job %s completed", job_arn)
            return _summary(event)
        if outcome == "partial":
            text = (
                f"Bedrock batch job {job_arn} ended PartiallyCompleted: "
                f"{event.get('processed_records')} of {event.get('total_records')} records processed "
                f"({message})"
            )
            if self.fail_on_partial:
                raise AirflowFailException(text)
            self.log.warning("%s; the processed records are billed and will be collected", text)
            return _summary(event)
        if outcome == "failed":
            raise BedrockJobFailedException(
                f"Bedrock batch job {job_arn} ended {event.get('job_status')}: {message}"
            )
        if outcome == "deadline":
            # The deadline was read when the wait deferred; Bedrock may have set or moved the job's
            # expiration since (jobExpirationTime can appear after Submitted): look once more.
            job = self._job()
            if job.get("status") in TERMINAL_STATUSES:
                return self.execute_complete(context, job_event(job))
            if job_deadline(job, margin=self.deadline_margin) > datetime.now(UTC):
                self.log.info("Bedrock batch job %s expires later than the wait assumed: waiting on", job_arn)
                return self.execute(context)
            raise AirflowFailException(f"Gave up waiting for Bedrock batch job {job_arn}: {message}")
        if event.get("error_code") in WAIT_REFUSED_CODES:  # e.g. the job is gone
            raise AirflowFailException(f"Waiting for Bedrock batch job {job_arn} failed: {message}")
        raise AirflowException(f"Waiting for Bedrock batch job {job_arn} failed: {message}")

    def on_kill(self) -> None:
        """Stop the job when the (non-deferred) task is killed; the trigger handles the deferred case."""
        if self.stop_on_kill and self.job_arn:
            self.hook.stop_job(self.job_arn)

    def _log_progress(self, job: dict[str, Any]) -> None:
        counts = job_progress(job)
        self.log.info(
            "Bedrock batch job %s is %s: %s of %s records processed (%s succeeded, %s failed)",
            self.job_arn,
            job.get("status"),
            counts["processed_records"],
            counts["total_records"],
            counts["success_records"],
            counts["error_records"],
        )


def _summary(event: dict[str, Any]) -> dict[str, Any]:
    keys = ("job_arn", "job_name", "job_status", "message", "total_records", "processed_records")
    keys += ("success_records", "error_records")
    return {key: event.get(key) for key in keys}
