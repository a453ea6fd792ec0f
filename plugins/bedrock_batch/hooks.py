"""BedrockBatchHook: every Bedrock batch-inference API call of the project goes through here.

The hook owns the client so that operators, sensors and the trigger stay thin, and so that the
retry policy (botocore adaptive retries, which also rate-limit the client after throttling) is set
in one place. Credentials and ``endpoint_url`` come from the Airflow AWS connection only: pointing
that connection at a stand-in is the whole difference between a test and production.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

from bedrock_batch.errors import ConfigError
from bedrock_batch.job_status import (
    ACTIVE_STATUSES,
    DEFAULT_TIMEOUT_HOURS,
    FAILED_STATUSES,
    PARTIAL_STATUSES,
    SUCCESS_STATUSES,
    TERMINAL_STATUSES,
    is_transient_error,
    job_deadline,
    job_progress,
)
from bedrock_batch.job_tags import MAX_JOB_TAGS

if TYPE_CHECKING:
    from botocore.config import Config

DEFAULT_RETRIES: dict[str, Any] = {"mode": "adaptive", "max_attempts": 10}
"""Client-side retries; the connection's ``config_kwargs`` may override them."""

JOB_NAME_PATTERN = re.compile(r"[a-zA-Z0-9]{1,63}(-*[a-zA-Z0-9\+\-\.]){0,63}")
TOKEN_PATTERN = re.compile(r"[a-zA-Z0-9]{1,256}(-*[a-zA-Z0-9]){0,256}")
_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:bedrock:([^:]*):[^:]*:model-invocation-job/([a-zA-Z0-9]+)$")

_STOP_REFUSED_CODES = frozenset({"ValidationException", "ConflictException"})
"""What Bedrock answers when asked to stop a job that is no longer running."""
_STOPPED_OR_STOPPING = frozenset({*TERMINAL_STATUSES, "Stopping"})
"""A stop Bedrock refuses for a job in one of these states has nothing left to do."""


class StopOutcome(NamedTuple):
    """What :meth:`BedrockBatchHook.request_stop` found: whether Bedrock took the stop, and the
    job's status afterwards."""

    accepted: bool
    status: str


_MAX_LIST_PAGES = 1000
"""Upper bound of ListModelInvocationJobs pages one call reads, whatever nextToken says."""


__all__ = [
    "ACTIVE_STATUSES",
    "DEFAULT_TIMEOUT_HOURS",
    "FAILED_STATUSES",
    "PARTIAL_STATUSES",
    "SUCCESS_STATUSES",
    "TERMINAL_STATUSES",
    "BedrockBatchHook",
    "StopOutcome",
    "is_transient_error",
    "job_deadline",
    "job_progress",
]


class BedrockBatchHook(AwsBaseHook):
    """
    Submit, inspect, list, stop and adopt Amazon Bedrock batch inference jobs.

    :param aws_conn_id: the Airflow AWS connection (credentials, region, ``endpoint_url``).
    :param region_name: overrides the connection's region.
    :param config: botocore config; when given it replaces the connection's ``config_kwargs``
        (the base hook's precedence). Either way it is laid over adaptive retries, 10 attempts.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "bedrock"
        super().__init__(*args, **kwargs)

    @property
    def config(self) -> Config:
        """Adaptive retries under whatever the hook or the connection configured (they win)."""
        from botocore.config import Config

        base = Config(retries=dict(DEFAULT_RETRIES))
        configured = self.conn_config.botocore_config
        return base.merge(configured) if configured is not None else base

    # -- submit ---------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        job_name: str,
        role_arn: str,
        model_id: str,
        input_s3_uri: str,
        output_s3_uri: str,
        client_request_token: str,
        tags: Mapping[str, str],
        timeout_hours: int | None = None,
        kms_key_id: str | None = None,
        bucket_owner: str | None = None,
        invocation_type: str | None = None,
        vpc_config: Mapping[str, Any] | None = None,
    ) -> str:
        """
        CreateModelInvocationJob; return the job ARN.

        ``client_request_token`` makes the call idempotent: the same token returns the job already
        created instead of a second, billed one.
        """
        _check_job_name(job_name)
        if not TOKEN_PATTERN.fullmatch(client_request_token or ""):
            raise ConfigError(
                f"client_request_token {client_request_token!r} is not valid: letters, digits and "
                "hyphens only, starting with a letter or digit"
            )
        if timeout_hours is not None and not 24 <= int(timeout_hours) <= 168:
            raise ConfigError(f"timeout_hours must be between 24 and 168, got {timeout_hours!r}")
        if len(tags) > MAX_JOB_TAGS:
            raise ConfigError(f"tags: at most {MAX_JOB_TAGS} tags per job, got {len(tags)}")
        s3_input: dict[str, Any] = {"s3Uri": input_s3_uri, "s3InputFormat": "JSONL"}
        s3_output: dict[str, Any] = {"s3Uri": output_s3_uri}
        if bucket_owner:
            s3_input["s3BucketOwner"] = bucket_owner
            s3_output["s3BucketOwner"] = bucket_owner
        if kms_key_id:
            s3_output["s3EncryptionKeyId"] = kms_key_id
        request: dict[str, Any] = {
            "jobName": job_name,
            "roleArn": role_arn,
            "modelId": model_id,
            "clientRequestToken": client_request_token,
            "inputDataConfig": {"s3InputDataConfig": s3_input},
            "outputDataConfig": {"s3OutputDataConfig": s3_output},
            "tags": [{"key": str(key), "value": str(value)} for key, value in tags.items()],
        }
        if timeout_hours is not None:
            request["timeoutDurationInHours"] = int(timeout_hours)
        if invocation_type:
            request["modelInvocationType"] = invocation_type
        if vpc_config:
            request["vpcConfig"] = dict(vpc_config)
        job_arn = self.conn.create_model_invocation_job(**request)["jobArn"]
        self.log.info("Submitted Bedrock batch job %s as %s", job_name, job_arn)
        return job_arn

    # -- inspect --------------------------------------------------------------------------------
    def get_job(self, job_arn: str) -> dict[str, Any]:
        """GetModelInvocationJob, without the response metadata."""
        response = self.conn.get_model_invocation_job(jobIdentifier=job_arn)
        response.pop("ResponseMetadata", None)
        return response

    async def get_job_async(self, job_arn: str, *, client: Any = None) -> dict[str, Any]:
        """
        GetModelInvocationJob on the aiobotocore client, for the trigger.

        Pass ``client`` (from ``async with await hook.get_async_conn() as client``) to reuse one
        connection pool across polls; without it a client is opened and closed for this call.
        """
        if client is None:
            async with await self.get_async_conn() as own_client:
                return await self.get_job_async(job_arn, client=own_client)
        response = await client.get_model_invocation_job(jobIdentifier=job_arn)
        response.pop("ResponseMetadata", None)
        return response

    def iter_jobs(
        self,
        *,
        status: str | None = None,
        name_contains: str | None = None,
        submitted_after: datetime | None = None,
        submitted_before: datetime | None = None,
        sort_order: str = "Descending",
        max_items: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """
        ListModelInvocationJobs summaries, following ``nextToken``.

        Bounded: stops after ``max_items`` summaries, after 1,000 pages, or when the service hands
        back a token it already gave.
        """
        if sort_order not in ("Ascending", "Descending"):
            raise ConfigError(f"sort_order must be 'Ascending' or 'Descending', got {sort_order!r}")
        if max_items is not None and max_items < 1:
            raise ConfigError(f"max_items must be at least 1, got {max_items!r}")
        request: dict[str, Any] = {"sortBy": "CreationTime", "sortOrder": sort_order}
        if status:
            request["statusEquals"] = status
        if name_contains:
            request["nameContains"] = name_contains
        if submitted_after:
            request["submitTimeAfter"] = submitted_after
        if submitted_before:
            request["submitTimeBefore"] = submitted_before
        yielded = 0
        seen_tokens: set[str] = set()
        for _ in range(_MAX_LIST_PAGES):
            page_size = 1000 if max_items is None else min(1000, max_items - yielded)
            response = self.conn.list_model_invocation_jobs(maxResults=page_size, **request)
            for summary in response.get("invocationJobSummaries", []):
                yield summary
                yielded += 1
                if max_items is not None and yielded >= max_items:
                    return
            token = response.get("nextToken")
            if not token or token in seen_tokens:
                return
            seen_tokens.add(token)
            request["nextToken"] = token
        self.log.warning("Stopped listing Bedrock batch jobs after %d pages", _MAX_LIST_PAGES)

    def jobs_named(self, name_contains: str) -> list[dict[str, Any]]:
        """Summaries of the jobs whose name holds ``name_contains`` (whatever their status), newest first."""
        return [
            summary
            for summary in self.iter_jobs(name_contains=name_contains, max_items=1000)
            if name_contains in summary.get("jobName", "")
        ]

    def find_job(self, *, job_name: str, client_request_token: str | None = None) -> dict[str, Any] | None:
        """
        The newest job named exactly ``job_name`` (and created with ``client_request_token``).

        Used to adopt a job Bedrock accepted although the create call raised (a read timeout or a
        5xx after the commit), and to re-attach a task that lost the job ARN.
        """
        for summary in self.iter_jobs(name_contains=job_name, sort_order="Descending", max_items=1000):
            if summary.get("jobName") != job_name:
                continue
            token = summary.get("clientRequestToken")
            if client_request_token and token and token != client_request_token:
                continue
            return summary
        return None

    def get_job_tags(self, job_arn: str) -> dict[str, str]:
        """ListTagsForResource of a job (the summaries of ListModelInvocationJobs carry no tags)."""
        response = self.conn.list_tags_for_resource(resourceARN=job_arn)
        return {item["key"]: item["value"] for item in response.get("tags", [])}

    # -- stop -----------------------------------------------------------------------------------
    def stop_job(self, job_arn: str) -> str:
        """
        StopModelInvocationJob; return the job's status afterwards.

        A job that already finished, or is already stopping, is not an error: its status is logged and
        returned.
        """
        return self.request_stop(job_arn).status

    def request_stop(self, job_arn: str) -> StopOutcome:
        """:meth:`stop_job`, also saying whether Bedrock took the stop: a job read as running a moment
        earlier may have ended (or been stopped by someone else) before this call."""
        from botocore.exceptions import ClientError

        try:
            self.conn.stop_model_invocation_job(jobIdentifier=job_arn)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") not in _STOP_REFUSED_CODES:
                raise
            status = self.get_job(job_arn)["status"]
            if status not in _STOPPED_OR_STOPPING:
                raise
            self.log.info("Bedrock batch job %s already %s; nothing to stop", job_arn, status)
            return StopOutcome(accepted=False, status=status)
        status = self.get_job(job_arn)["status"]
        self.log.info("Asked Bedrock to stop batch job %s; status now %s", job_arn, status)
        return StopOutcome(accepted=True, status=status)

    async def stop_job_async(self, job_arn: str) -> str | None:
        """StopModelInvocationJob on the aiobotocore client; None when it was stopped, else the status."""
        from botocore.exceptions import ClientError

        async with await self.get_async_conn() as client:
            try:
                await client.stop_model_invocation_job(jobIdentifier=job_arn)
            except ClientError as error:
                if error.response.get("Error", {}).get("Code") not in _STOP_REFUSED_CODES:
                    raise
                status = (await self.get_job_async(job_arn, client=client))["status"]
                if status not in _STOPPED_OR_STOPPING:
                    raise
                self.log.info("Bedrock batch job %s already %s; nothing to stop", job_arn, status)
                return status
        self.log.info("Asked Bedrock to stop batch job %s", job_arn)
        return None

    @staticmethod
    def job_id_from_arn(job_arn: str) -> str:
        """The job id (last part of the ARN), the folder Bedrock writes the output under."""
        match = _ARN_PATTERN.match(job_arn or "")
        if not match:
            raise ConfigError(f"{job_arn!r} is not a Bedrock model-invocation-job ARN")
        return match.group(2)

    @staticmethod
    def region_from_arn(job_arn: str) -> str | None:
        """The region in a job's ARN (None if it names none): where to send calls about that job."""
        match = _ARN_PATTERN.match(job_arn or "")
        if not match:
            raise ConfigError(f"{job_arn!r} is not a Bedrock model-invocation-job ARN")
        return match.group(1) or None


def _check_job_name(job_name: str) -> None:
    if not job_name or len(job_name) > 63 or not JOB_NAME_PATTERN.fullmatch(job_name):
        raise ConfigError(
            f"job_name {job_name!r} is not a valid Bedrock batch job name: 1 to 63 letters, digits, "
            "'+', '-' or '.', starting with a letter or digit"
        )
