"""Operators that submit, stop and list Bedrock batch jobs.

Submitting is where money is spent, so it is built to never create a second job for the same
input: a deterministic ``clientRequestToken``, the job ARN kept in the task state store for a
retried task, and adoption of a job Bedrock accepted although the create call raised.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator, ResumableJobMixin

from bedrock_batch.errors import ConfigError
from bedrock_batch.job_status import (
    ACTIVE_STATUSES,
    PARTIAL_STATUSES,
    REFUSED_CODES,
    SUCCESS_STATUSES,
    aws_error_code,
    job_progress,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bedrock_batch.hooks import BedrockBatchHook
    from bedrock_batch.staging import StagedJob

_ADOPT_ATTEMPTS = 3
_ADOPT_PAUSE = 2.0
"""ListModelInvocationJobs may lag a create by a moment: look this many times, this far apart."""

_REQUIRED_JOB_KEYS = ("job_name", "input_s3_uri", "output_s3_uri")


def derive_client_request_token(
    *,
    dag_id: str,
    run_id: str,
    job_name: str,
    input_s3_uri: str,
    records: Any,
    size_bytes: Any,
    generation: int = 0,
) -> str:
    """
    The idempotency token of one job of one DAG run: 64 hex characters.

    The same run, job and input give the same token, so every retry of the task gets back the job
    the first try created; a different input (another URI, record count or size) gets a new job.
    ``generation`` counts the earlier jobs of the same planned name that have ended (the plan's): a
    run cleared after one gets a new job for the same input, not the ended one back.
    """
    fields: list[Any] = [dag_id, run_id, job_name, input_s3_uri, records, size_bytes]
    if generation:  # absent for the first job: its token is the one earlier releases derived
        fields.append(int(generation))
    return hashlib.sha256(json.dumps(fields, default=str).encode()).hexdigest()


def staged_job_token(*, dag_id: str, run_id: str, job: StagedJob) -> str:
    """:func:`derive_client_request_token` of one job of a staging plan, as its submit task derives it."""
    return derive_client_request_token(
        dag_id=dag_id,
        run_id=run_id,
        job_name=job.job_name,
        input_s3_uri=job.input_s3_uri,
        records=job.records,
        size_bytes=job.bytes,
        generation=job.generation,
    )


QUOTA_EXCEEDED_CODE = "ServiceQuotaExceededException"
"""CreateModelInvocationJob's answer when the account's jobs in flight (per model) are at the quota."""


def bedrock_job_name(planned_name: str, token: str) -> str:
    """The planned job name plus 8 characters of the input's token.

    A cleared and rerun DAG run re-stages what is still to do; with the fingerprint in the name its
    job gets a new name instead of colliding with the job of the first try.
    """
    return f"{planned_name}-{token[:8]}"


def _tag_values(written: Mapping[str, Any], rendered: Mapping[str, Any] | None) -> dict[str, str]:
    """Tag values as strings: a value written with no template stays exactly as written.

    A DAG that renders native objects reads every rendered string as a Python literal: "1e3" would
    tag the job 1000.0 and "0x1F" 31, breaking cost allocation or an IAM condition on the tag.
    """
    values = dict(rendered or {})
    for key, value in written.items():
        if isinstance(value, str) and "{{" not in value and "{%" not in value:
            values[key] = value
    return {str(key): str(value) for key, value in values.items()}


class BedrockBatchSubmitOperator(ResumableJobMixin, BaseOperator):
    """
    Submit one planned batch job and return at once; ``BedrockBatchJobSensor`` does the waiting.

    :param job: one job of the staging plan (templated): ``job_name``, ``input_s3_uri``,
        ``output_s3_uri``, ``records``, optionally ``bytes``, ``map_s3_uri``, ``index``.
    :param role_arn: service role Bedrock assumes to read the input and write the output.
    :param model_id: model id or inference profile.
    :param tags: tags put on the job.
    :param timeout_hours: the job's timeout (24..168); Bedrock's default when None.
    :param quota_retry_seconds: when Bedrock refuses the job because the account's jobs in flight are
        at the quota (``ServiceQuotaExceededException``), the task is rescheduled this much later,
        with its pool slot free meanwhile, instead of failing; after ``quota_max_wait_seconds`` of
        that it fails, naming the job.
    :param kms_key_id: KMS key for the output.
    :param bucket_owner: account owning the buckets, when not the caller's.
    :param invocation_type: ``InvokeModel`` or ``Converse``.
    :param vpc_config: ``{"subnetIds": [...], "securityGroupIds": [...]}``.
    :param aws_conn_id: Airflow AWS connection.
    :param region_name: overrides the connection's region (templated).
    :param client_request_token: idempotency token (templated); derived from the DAG run, the job
        name and the input when None.

    Returns ``{"job_arn", "job_id", "job_name", "status", "records", "input_s3_uri",
    "output_s3_uri", "map_s3_uri", "client_request_token"}``.

    A retry after the job ended Failed, Stopped or Expired gets that same job back (same token):
    resubmitting identical input on a blind retry would bill it twice for the same fault. To run
    it again on purpose, clear the run from prepare: the plan's job then has a new ``generation``
    (the ended jobs of its name), hence a new token and name. Or pass a new ``client_request_token``.
    """

    # kms_key_id, bucket_owner and region_name may be config templates ({{ var.value... }}): render them too.
    template_fields: Sequence[str] = (
        "job",
        "role_arn",
        "model_id",
        "invocation_type",
        "tags",
        "client_request_token",
        "kms_key_id",
        "bucket_owner",
        "region_name",
    )
    template_fields_renderers = {"job": "json", "tags": "json"}
    external_id_key = "bedrock_job_arn"

    def __init__(
        self,
        *,
        job: Mapping[str, Any],
        role_arn: str,
        model_id: str,
        tags: Mapping[str, str] | None = None,
        timeout_hours: int | None = None,
        kms_key_id: str | None = None,
        bucket_owner: str | None = None,
        invocation_type: str | None = None,
        vpc_config: Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        client_request_token: str | None = None,
        quota_retry_seconds: int = 600,
        quota_max_wait_seconds: int = 24 * 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job = job
        self.quota_retry_seconds = quota_retry_seconds
        self.quota_max_wait_seconds = quota_max_wait_seconds
        self.role_arn = role_arn
        self.model_id = model_id
        self.tags = tags
        self._written_tags = dict(tags) if isinstance(tags, Mapping) else {}
        self.timeout_hours = timeout_hours
        self.kms_key_id = kms_key_id
        self.bucket_owner = bucket_owner
        self.invocation_type = invocation_type
        self.vpc_config = vpc_config
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.client_request_token = client_request_token

    @cached_property
    def hook(self) -> BedrockBatchHook:
        from bedrock_batch.hooks import BedrockBatchHook

        return BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def execute(self, context: Context) -> dict[str, Any]:
        try:
            self._forget_job_of_other_input(context)
            result = self.execute_resumable(context)
        except ConfigError as error:  # a malformed plan job: a retry reads the same plan
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(str(error)) from error
        if result is None:
            # The mixin returns poll_until_complete()'s value (None) when it re-attaches to a
            # running job; the ARN it re-attached to is the one in the state store.
            job_arn = context["task_state_store"].get(self.external_id_key)
            result = self.get_job_result(job_arn, context)
        return result

    # -- ResumableJobMixin ----------------------------------------------------------------------
    def submit_job(self, context: Context) -> str:
        """Create the job, or adopt the one a previous try or a failed create call left behind."""
        job = self._checked_job()
        token = self._token(context, job)
        job_name = bedrock_job_name(job["job_name"], token)
        if context.get("task_state_store") is None:
            # No state store (e.g. an old runner): the token still makes create idempotent, but a
            # job whose token Bedrock has forgotten would be duplicated, so look for it first.
            found = self.hook.find_job(job_name=job_name, client_request_token=token)
            if found:
                self.log.info("Re-attaching to Bedrock batch job %s found by name", found["jobArn"])
                return found["jobArn"]
        try:
            return self.hook.create_job(
                job_name=job_name,
                role_arn=self.role_arn,
                model_id=self.model_id,
                input_s3_uri=job["input_s3_uri"],
                output_s3_uri=job["output_s3_uri"],
                client_request_token=token,
                tags=self._job_tags(context),
                timeout_hours=self.timeout_hours,
                kms_key_id=str(self.kms_key_id) if self.kms_key_id else None,
                # Native rendering turns an all-digit account id into an int.
                bucket_owner=str(self.bucket_owner) if self.bucket_owner else None,
                invocation_type=self.invocation_type,
                vpc_config=self.vpc_config,
            )
        except ConfigError as error:
            raise ConfigError(f"Bedrock batch job {job_name}: {error}") from error
        except Exception as error:
            code = aws_error_code(error)
            if code == QUOTA_EXCEEDED_CODE:  # refused: try again once jobs have ended
                # A create the client resent may have been accepted the first time: look once.
                found = self._adopt(job_name, token, attempts=1)
                if found:
                    return found
                self._wait_for_quota(context, job_name, error)
            if code in REFUSED_CODES:  # Bedrock looked at the request and said no: a retry says no again
                from airflow.sdk.exceptions import AirflowFailException

                raise AirflowFailException(
                    f"Bedrock refused batch job {job_name} ({code}): {error}"
                ) from error
            adopted = self._adopt(job_name, token)
            if adopted is None:
                raise
            self.log.warning(
                "Creating Bedrock batch job %s raised (%s) but Bedrock had accepted it; adopted %s",
                job_name,
                type(error).__name__,
                adopted,
            )
            return adopted

    def get_job_status(self, external_id: Any, context: Context) -> str:
        return self.hook.get_job(str(external_id))["status"]

    def is_job_active(self, status: str) -> bool:
        return status in ACTIVE_STATUSES

    def is_job_succeeded(self, status: str) -> bool:
        # A partial job's records are billed and its output is read: never resubmit it.
        return status in SUCCESS_STATUSES | PARTIAL_STATUSES

    def poll_until_complete(self, external_id: Any, context: Context) -> None:
        """
        Deliberately a no-op: this operator only submits.

        Waiting here would hold a worker slot for hours; ``BedrockBatchJobSensor`` waits on the
        triggerer instead. The mixin is still worth having for its re-attach on retry.
        """

    def get_job_result(self, external_id: Any, context: Context) -> dict[str, Any]:
        job_arn = str(external_id)
        job = self._checked_job()
        status = self.hook.get_job(job_arn)
        return {
            "job_arn": job_arn,
            "job_id": self.hook.job_id_from_arn(job_arn),
            "job_name": status.get("jobName", job["job_name"]),
            "status": status.get("status"),
            "records": job.get("records"),
            "input_s3_uri": job["input_s3_uri"],
            "output_s3_uri": job["output_s3_uri"],
            "map_s3_uri": job.get("map_s3_uri"),
            "client_request_token": status.get("clientRequestToken"),
        }

    # -- helpers --------------------------------------------------------------------------------
    def _forget_job_of_other_input(self, context: Context) -> None:
        """A cleared run may have re-staged different input: the job a previous try stored is not ours."""
        store = context.get("task_state_store")
        stored = store.get(self.external_id_key) if store is not None else None
        if not stored:
            return
        job = self._checked_job()
        expected = bedrock_job_name(job["job_name"], self._token(context, job))
        from botocore.exceptions import ClientError

        try:
            previous = self.hook.get_job(str(stored))
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ResourceNotFoundException":
                raise
            # Past Bedrock's job retention, or asked in another region or account than it ran in: it
            # runs on nothing here. Kept, its ARN would fail every retry of this task.
            self.log.warning(
                "Stored job %s is unknown to Bedrock (%s); submitting %s", stored, error, expected
            )
            store.set(self.external_id_key, "")
            return
        name, status = previous.get("jobName"), previous.get("status")
        if name == expected:
            return
        if status in ACTIVE_STATUSES:
            from airflow.sdk.exceptions import AirflowFailException

            # Its records are in the new input too: a second job would bill them twice, and nothing
            # of this run would ever read the first one's output.
            way_out = (
                "wait until it has stopped"
                if status == "Stopping"
                else "stop it (bedrock_batch_ops action=stop) or let it end"
            )
            raise AirflowFailException(
                f"Bedrock batch job {stored} ({name}), submitted by an earlier try of this run, is still "
                f"{status} on other input than prepare staged now ({job['input_s3_uri']}); submitting "
                f"{expected} would pay for its records twice. Please {way_out}, then clear this run "
                "from its prepare task on."
            )
        self.log.info(
            "Stored job %s (%s, %s) was for other input; submitting %s", stored, name, status, expected
        )
        store.set(self.external_id_key, "")

    def _checked_job(self) -> Mapping[str, Any]:
        job = self.job
        if not isinstance(job, Mapping):
            raise ConfigError(f"job must be a dict from the staging plan, got {type(job).__name__}")
        missing = [key for key in _REQUIRED_JOB_KEYS if not job.get(key)]
        if missing:
            raise ConfigError(f"job {job.get('job_name')!r} lacks {', '.join(missing)}")
        return job

    def _token(self, context: Context, job: Mapping[str, Any]) -> str:
        if self.client_request_token:
            return self.client_request_token
        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or context["dag"].dag_id
        return derive_client_request_token(
            dag_id=dag_id,
            run_id=context["run_id"],
            job_name=job["job_name"],
            input_s3_uri=job["input_s3_uri"],
            records=job.get("records"),
            size_bytes=job.get("bytes"),
            generation=int(job.get("generation") or 0),
        )

    def _job_tags(self, context: Context) -> dict[str, str]:
        """The configured tags plus the DAG run's and the plan's prompt version (``job_tags``), which
        the ops DAG, the UI page and a later load of the job read."""
        from bedrock_batch.job_tags import prompt_version_tags, run_tags

        ti = context.get("ti")
        dag_id = getattr(ti, "dag_id", None) or context["dag"].dag_id
        job = self.job if isinstance(self.job, Mapping) else {}
        return {
            **_tag_values(self._written_tags, self.tags),
            **run_tags(dag_id=dag_id, run_id=context["run_id"]),
            **prompt_version_tags(job.get("prompt_version")),
        }

    def _wait_for_quota(self, context: Context, job_name: str, error: BaseException) -> NoReturn:
        """Reschedule the task (its pool slot free) until the quota has room, for at most a while."""
        from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException

        waited = int(context.get("task_reschedule_count") or 0) * self.quota_retry_seconds
        if waited >= self.quota_max_wait_seconds:
            raise AirflowFailException(
                f"Bedrock's quota of batch jobs in flight stayed full for {waited // 60} minutes; job "
                f"{job_name} was not submitted ({error}). Raise the quota (Service Quotas) or stop other "
                "jobs, then clear this task."
            ) from error
        again = datetime.now(UTC) + timedelta(seconds=self.quota_retry_seconds)
        self.log.warning(
            "Bedrock's quota of batch jobs in flight is full; submitting %s again at %s "
            "(the task gives its pool slot back meanwhile; gives up after %d minutes): %s",
            job_name,
            again.isoformat(timespec="seconds"),
            self.quota_max_wait_seconds // 60,
            error,
        )
        raise AirflowRescheduleException(again) from error

    def _adopt(self, job_name: str, token: str, *, attempts: int = _ADOPT_ATTEMPTS) -> str | None:
        """The ARN of the job this create made after all, looked for ``attempts`` times; else None."""
        for attempt in range(attempts):
            try:
                found = self.hook.find_job(job_name=job_name, client_request_token=token)
            except Exception as error:
                self.log.warning("Looking for Bedrock batch job %s failed: %s", job_name, error)
                found = None
            if found:
                return found["jobArn"]
            if attempt + 1 < attempts:
                time.sleep(_ADOPT_PAUSE)
        return None


class BedrockBatchStopJobOperator(BaseOperator):
    """
    Stop a Bedrock batch job; a job that already finished is not an error.

    Returns ``{"job_arn", "status"}`` with the status after the request.
    """

    template_fields: Sequence[str] = ("job_arn", "region_name")

    def __init__(
        self,
        *,
        job_arn: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.job_arn = job_arn
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def execute(self, context: Context) -> dict[str, Any]:
        from bedrock_batch.hooks import BedrockBatchHook

        hook = BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        return {"job_arn": self.job_arn, "status": hook.stop_job(self.job_arn)}


class BedrockBatchListJobsOperator(BaseOperator):
    """
    List Bedrock batch jobs as small dicts (arn, name, status, submit time, counts), newest first.

    ``submitted_after`` / ``submitted_before`` take datetimes or ISO 8601 strings (templated).
    """

    template_fields: Sequence[str] = (
        "status",
        "name_contains",
        "submitted_after",
        "submitted_before",
        "region_name",
    )

    def __init__(
        self,
        *,
        status: str | None = None,
        name_contains: str | None = None,
        submitted_after: datetime | str | None = None,
        submitted_before: datetime | str | None = None,
        sort_order: str = "Descending",
        max_items: int = 100,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.status = status
        self.name_contains = name_contains
        self.submitted_after = submitted_after
        self.submitted_before = submitted_before
        self.sort_order = sort_order
        self.max_items = max_items
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from bedrock_batch.hooks import BedrockBatchHook

        hook = BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        jobs = [
            {
                "job_arn": summary["jobArn"],
                "job_name": summary.get("jobName"),
                "status": summary.get("status"),
                "submit_time": _iso(summary.get("submitTime")),
                "message": summary.get("message"),
                **job_progress(summary),
            }
            for summary in hook.iter_jobs(
                status=self.status or None,
                name_contains=self.name_contains or None,
                submitted_after=_as_datetime(self.submitted_after, "submitted_after"),
                submitted_before=_as_datetime(self.submitted_before, "submitted_before"),
                sort_order=self.sort_order,
                max_items=self.max_items,
            )
        ]
        self.log.info("Listed %d Bedrock batch jobs", len(jobs))
        return jobs


def _as_datetime(value: datetime | str | None, setting: str) -> datetime | None:
    if value is None or value == "" or isinstance(value, datetime):
        return value or None
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as error:
        raise ConfigError(f"{setting} must be an ISO 8601 timestamp, got {value!r}") from error


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
