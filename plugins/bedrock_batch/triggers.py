"""The trigger that waits for one Bedrock batch job on the triggerer.

A job runs for minutes to days; polling it from a worker would hold a slot the whole time. The
trigger polls GetModelInvocationJob on the aiobotocore client, backs off while nothing changes,
logs progress (counts only, never record text), and yields exactly one event when the job ends or
its deadline passes. Everything it needs is in its kwargs, so a triggerer restart simply runs it
again from the start and loses nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from bedrock_batch.job_status import (
    FAILED_STATUSES,
    PARTIAL_STATUSES,
    SUCCESS_STATUSES,
    TERMINAL_STATUSES,
    aws_error_code,
    is_transient_error,
    job_progress,
)

if TYPE_CHECKING:
    from bedrock_batch.hooks import BedrockBatchHook

_ON_KILL_TIMEOUT = 30.0
"""Seconds on_kill() may spend asking Bedrock to stop the job."""
_STATE_LOOKUP_TIMEOUT = 8.0
"""Seconds one try of on_kill() may spend asking Airflow whether the task still waits on the job."""
_STATE_LOOKUP_TRIES = 3
"""Tries of that question (a busy or restarting API server) before the job is left running."""
_STATE_LOOKUP_PAUSE = 1.0
"""Seconds between those tries."""
_DEFERRED = "deferred"
_UNKNOWN = "<unknown>"
"""What :meth:`BedrockBatchJobTrigger._task_state` returns when Airflow could not be asked."""
_STOPPING: set[asyncio.Future[None]] = set()
"""on_kill's shielded stops under way."""


def job_event(job: Mapping[str, Any]) -> dict[str, Any]:
    """
    The event payload for a job in a terminal status.

    ``status`` is the outcome the sensor acts on (success, partial, failed); ``job_status`` is
    Bedrock's own word and ``message`` the service's reason, if any.
    """
    job_status = job.get("status", "")
    if job_status in SUCCESS_STATUSES:
        outcome = "success"
    elif job_status in PARTIAL_STATUSES:
        outcome = "partial"
    elif job_status in FAILED_STATUSES:
        outcome = "failed"
    else:
        raise ValueError(f"job {job.get('jobArn')} is not finished (status {job_status!r})")
    return {
        "status": outcome,
        "job_arn": job.get("jobArn"),
        "job_name": job.get("jobName"),
        "job_status": job_status,
        "message": job.get("message") or "",
        **job_progress(job),
    }


class BedrockBatchJobTrigger(BaseTrigger):
    """
    Poll one Bedrock batch job until it ends, then fire a single TriggerEvent.

    The event's ``status`` is ``success`` (Completed), ``partial`` (PartiallyCompleted), ``failed``
    (Failed, Stopped, Expired), ``deadline`` (still not finished at ``deadline``) or ``error`` (an
    API error that retrying cannot fix).

    :param job_arn: the job to watch.
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: overrides the connection's region.
    :param poll_interval: the shortest pause between polls (seconds); used again after every status
        change.
    :param max_poll_interval: the longest pause between polls (seconds).
    :param backoff: factor the pause grows by while the status stays the same.
    :param jitter: share (0..1) by which each pause is randomly stretched or shrunk, so that many
        triggers do not poll in lockstep.
    :param deadline: ISO 8601 timestamp after which the trigger gives up with a ``deadline`` event;
        None waits as long as the task's defer timeout allows.
    :param progress_log_interval: log progress at least this often (seconds), besides every status
        change.
    :param stop_on_kill: stop the job when a user kills the deferred task.
    """

    def __init__(
        self,
        *,
        job_arn: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        max_poll_interval: float = 300.0,
        backoff: float = 1.5,
        jitter: float = 0.1,
        deadline: str | None = None,
        progress_log_interval: float = 600.0,
        stop_on_kill: bool = True,
    ) -> None:
        super().__init__()
        if poll_interval <= 0 or max_poll_interval < poll_interval:
            raise ValueError(
                f"poll_interval ({poll_interval}) must be positive and at most "
                f"max_poll_interval ({max_poll_interval})"
            )
        if backoff < 1:
            raise ValueError(f"backoff must be at least 1, got {backoff}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if deadline is not None:
            _parse_deadline(deadline)  # fail at defer time, not on the triggerer
        self.job_arn = job_arn
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.backoff = float(backoff)
        self.jitter = float(jitter)
        self.deadline = deadline
        self.progress_log_interval = float(progress_log_interval)
        self.stop_on_kill = stop_on_kill

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "job_arn": self.job_arn,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "backoff": self.backoff,
                "jitter": self.jitter,
                "deadline": self.deadline,
                "progress_log_interval": self.progress_log_interval,
                "stop_on_kill": self.stop_on_kill,
            },
        )

    def hook(self) -> BedrockBatchHook:
        from bedrock_batch.hooks import BedrockBatchHook

        return BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        deadline = _parse_deadline(self.deadline) if self.deadline else None
        rng = random.Random()
        hook = self.hook()
        interval = self.poll_interval
        last_status: str | None = None
        last_logged = float("-inf")
        last_error: BaseException | None = None
        try:
            client_context = await hook.get_async_conn()
        except Exception as error:
            yield self._error_event(f"could not create the Bedrock client: {error}")
            return
        async with client_context as client:
            while True:
                job: dict[str, Any] | None = None
                try:
                    job = await hook.get_job_async(self.job_arn, client=client)
                    last_error = None
                except Exception as error:
                    if not is_transient_error(error):
                        yield self._error_event(
                            f"GetModelInvocationJob failed: {error}", error_code=aws_error_code(error)
                        )
                        return
                    last_error = error
                    self.log.warning(
                        "Polling Bedrock batch job %s failed, will retry: %s", self.job_arn, error
                    )

                if job is not None:
                    status = job.get("status", "")
                    changed = status != last_status
                    if changed or time.monotonic() - last_logged >= self.progress_log_interval:
                        self._log_progress(job)
                        last_logged = time.monotonic()
                    if status in TERMINAL_STATUSES:
                        yield TriggerEvent(job_event(job))
                        return
                    interval = self.poll_interval if changed else self._grow(interval)
                    last_status = status
                else:
                    interval = self._grow(interval)

                pause = self._jittered(interval, rng)
                if deadline is not None:
                    remaining = (deadline - datetime.now(UTC)).total_seconds()
                    if remaining <= 0:
                        yield TriggerEvent(self._deadline_payload(last_status, last_error))
                        return
                    pause = min(pause, remaining)
                await asyncio.sleep(pause)

    async def on_kill(self) -> None:
        """Stop the job when a user acts on the deferred task (never on a triggerer restart).

        Airflow calls this on mark-failed, clear and mark-succeeded alike: all three stop the job.
        Airflow 3.3 also calls it when a triggerer whose heartbeat lapsed loses the trigger to
        another one (apache/airflow#73454), while the task still waits on the job: so the task's
        state is asked first, and the job is stopped only once the task has left the deferred state.

        Until on_kill returns, the triggerer cancels the trigger again at each sync (about every
        second), sooner than Airflow may answer: the decision and the stop run shielded, in a task
        of their own that the cancellation does not reach.
        """
        if not self.stop_on_kill:
            self.log.info(
                "Task marked failed, cleared or marked succeeded; leaving Bedrock batch job %s running "
                "(stop_on_kill=False)",
                self.job_arn,
            )
            return
        stopping = asyncio.ensure_future(self._stop_unless_still_waited_on())
        _STOPPING.add(stopping)  # the loop keeps only a weak reference to a task
        stopping.add_done_callback(_STOPPING.discard)
        await asyncio.shield(stopping)

    async def _stop_unless_still_waited_on(self) -> None:
        state = await self._task_state()
        if state == _DEFERRED:
            self.log.info(
                "The task waiting on Bedrock batch job %s is deferred (its trigger moved to another "
                "triggerer, or a cleared wait is waiting on the job again): leaving the job running",
                self.job_arn,
            )
            return
        if state == _UNKNOWN:
            self.log.warning(
                "Could not tell whether a user acted on the task waiting on Bedrock batch job %s or its "
                "trigger moved to another triggerer: leaving the job running. To stop it, trigger "
                "bedrock_batch_ops with action=stop and job_arn=%s",
                self.job_arn,
                self.job_arn,
            )
            return
        self.log.warning(
            "Task marked failed, cleared or marked succeeded (now %s); stopping Bedrock batch job %s "
            "(stop_on_kill=True: records it has not processed are queued for the next run)",
            state or "no state",
            self.job_arn,
        )
        await asyncio.wait_for(self.hook().stop_job_async(self.job_arn), timeout=_ON_KILL_TIMEOUT)

    async def _task_state(self) -> str | None:
        """The state of the task instance this trigger serves, as Airflow holds it now.

        ``None`` when it has none (cleared) or when no triggerer runs this trigger for a task (it is
        called directly: nothing to ask); ``_UNKNOWN`` when Airflow could not be asked.
        """
        ti = getattr(self, "task_instance", None)
        if ti is None:
            return None
        for attempt in range(1, _STATE_LOOKUP_TRIES + 1):
            try:
                return await asyncio.wait_for(
                    asyncio.to_thread(
                        task_instance_state, ti.dag_id, ti.task_id, ti.run_id, getattr(ti, "map_index", -1)
                    ),
                    timeout=_STATE_LOOKUP_TIMEOUT,
                )
            except Exception as error:
                self.log.warning(
                    "Asking Airflow for the state of %s failed (try %d of %d): %s",
                    ti.task_id,
                    attempt,
                    _STATE_LOOKUP_TRIES,
                    repr(error) if isinstance(error, TimeoutError) else error,
                )
            if attempt < _STATE_LOOKUP_TRIES:
                await asyncio.sleep(_STATE_LOOKUP_PAUSE)
        return _UNKNOWN

    # -- helpers --------------------------------------------------------------------------------
    def _grow(self, interval: float) -> float:
        return min(self.max_poll_interval, interval * self.backoff)

    def _jittered(self, interval: float, rng: random.Random) -> float:
        stretched = interval * (1 + rng.uniform(-self.jitter, self.jitter))
        return min(self.max_poll_interval, max(self.poll_interval, stretched))

    def _log_progress(self, job: Mapping[str, Any]) -> None:
        counts = job_progress(job)
        self.log.info(
            "Bedrock batch job %s is %s: %s of %s records processed (%s succeeded, %s failed)",
            self.job_arn,
            job.get("status"),
            _count(counts["processed_records"]),
            _count(counts["total_records"]),
            _count(counts["success_records"]),
            _count(counts["error_records"]),
        )

    def _deadline_payload(self, last_status: str | None, last_error: BaseException | None) -> dict[str, Any]:
        message = f"job not finished by its deadline {self.deadline} (last status {last_status or 'unknown'})"
        if last_error is not None:
            message += f"; last polling error: {last_error}"
        return {
            "status": "deadline",
            "job_arn": self.job_arn,
            "job_status": last_status,
            "message": message,
        }

    def _error_event(self, message: str, *, error_code: str | None = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "error",
                "job_arn": self.job_arn,
                "job_status": None,
                "message": message,
                "error_code": error_code,
            }
        )


def task_instance_state(dag_id: str, task_id: str, run_id: str, map_index: int | None) -> str | None:
    """A task instance's state, asked of Airflow from the triggerer (blocking: run it in a thread)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    index = -1 if map_index is None else map_index
    states = RuntimeTaskInstance.get_task_states(
        dag_id=dag_id, task_ids=[task_id], run_ids=[run_id], map_index=index
    )
    of_run = states.get(run_id) or {}
    key = task_id if index < 0 else f"{task_id}_{index}"  # how Airflow keys a mapped instance
    state = of_run.get(key)  # none when the run or the task instance was deleted: nobody waits
    return None if state is None else str(getattr(state, "value", state))


def _parse_deadline(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"deadline must be an ISO 8601 timestamp, got {value!r}") from error
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)
