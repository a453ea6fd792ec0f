"""The Bedrock control plane (rest-json): model invocation jobs, in the botocore model's shapes."""

from __future__ import annotations

import base64
import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.wrappers import Request, Response

from local_aws.errors import AwsError
from local_aws.faults import ServerFaults
from local_aws.jobs import ACTIVE, STOPPABLE, Job, JobStore, JobWorker
from local_aws.models import base_model_id, family_name, is_custom_model
from local_aws.quotas import Quotas
from local_aws.settings import ACCOUNT_ID, Settings
from local_aws.validation import validate

JOB_PREFIX = "/model-invocation-job/"
DEFAULT_TIMEOUT_HOURS = 168


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def region_of(job: Job) -> str:
    """The region a job was created in (its ARN's)."""
    return job.job_arn.split(":")[3]


def _quota_key(model_id: str) -> str:
    """What a job counts against: a custom model itself, any other model its base foundation model."""
    return model_id if is_custom_model(model_id) else base_model_id(model_id)


def _parse_time(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _json(data: dict[str, Any]) -> Response:
    return Response(
        json.dumps({k: v for k, v in data.items() if v is not None}), 200, content_type="application/json"
    )


def _raw_path(request: Request) -> str:
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    return urlsplit(raw).path if raw else request.path


def describe(job: Job) -> dict[str, Any]:
    """The GetModelInvocationJob response (also the list summary) of ``job``."""
    return {
        "jobArn": job.job_arn,
        "jobName": job.job_name,
        "modelId": job.model_id,
        "clientRequestToken": job.client_request_token,
        "roleArn": job.role_arn,
        "status": job.status,
        "message": job.message,
        "submitTime": iso(job.submit_time),
        "lastModifiedTime": iso(job.last_modified_time),
        "endTime": iso(job.end_time),
        "inputDataConfig": job.input_data_config,
        "outputDataConfig": job.output_data_config,
        "vpcConfig": job.vpc_config,
        "timeoutDurationInHours": job.timeout_hours,
        "jobExpirationTime": iso(job.job_expiration_time),
        "modelInvocationType": job.invocation_type,
        "totalRecordCount": job.total_records,
        "processedRecordCount": job.processed,
        "successRecordCount": job.succeeded,
        "errorRecordCount": job.errored,
    }


class ControlPlane:
    """Create, get, list, stop and tag-list model invocation jobs."""

    def __init__(
        self, store: JobStore, worker: JobWorker, faults: ServerFaults, quotas: Quotas, settings: Settings
    ) -> None:
        self.store = store
        self.worker = worker
        self.faults = faults
        self.quotas = quotas
        self.settings = settings

    def operation_for(self, request: Request) -> str:
        path, method = _raw_path(request), request.method
        if path == "/model-invocation-job" and method == "POST":
            return "CreateModelInvocationJob"
        if path == "/model-invocation-jobs" and method == "GET":
            return "ListModelInvocationJobs"
        if path == "/listTagsForResource" and method == "POST":
            return "ListTagsForResource"
        if path.startswith(JOB_PREFIX):
            if method == "POST" and path.endswith("/stop"):
                return "StopModelInvocationJob"
            if method == "GET":
                return "GetModelInvocationJob"
        raise AwsError("UnknownOperationException", f"{method} {path} is not emulated by local_aws.")

    def handle(self, operation: str, request: Request, region: str) -> Response:
        if operation == "CreateModelInvocationJob":
            return self.create(json.loads(request.get_data() or b"{}"), region)
        if operation == "ListModelInvocationJobs":
            return self.list(request.args.to_dict(), region)
        if operation == "ListTagsForResource":
            return self.list_tags(json.loads(request.get_data() or b"{}"), region)
        ident = unquote(_raw_path(request)[len(JOB_PREFIX) :].removesuffix("/stop"))
        validate("bedrock", operation, {"jobIdentifier": ident})
        job = self._find(ident, region)
        if operation == "GetModelInvocationJob":
            return _json(describe(job))
        if job.status not in STOPPABLE:
            raise AwsError(
                "ValidationException", f"The job {job.job_arn} is {job.status} and cannot be stopped."
            )
        self.worker.stop_job(job)
        return _json({})

    def _find(self, ident: str, region: str) -> Job:
        """The job ``ident`` (id or ARN) names, in the region the request was signed for: a job is
        a regional resource, so another region's endpoint does not know it."""
        job = self.store.get(ident.rsplit("/", 1)[-1])
        if job is None or region_of(job) != region or (ident.startswith("arn:") and ident != job.job_arn):
            raise AwsError("ResourceNotFoundException", f"The specified job {ident} could not be found.")
        return job

    def _jobs_in(self, region: str) -> list[Job]:
        return [job for job in self.store.all() if region_of(job) == region]

    def create(self, body: dict[str, Any], region: str) -> Response:
        validate("bedrock", "CreateModelInvocationJob", body)
        token = body.get("clientRequestToken")
        with self.store.lock:
            jobs = self._jobs_in(region)
            if token and (existing := next((j for j in jobs if j.client_request_token == token), None)):
                return _json({"jobArn": existing.job_arn})
            invocation_type = body.get("modelInvocationType")
            if family_name(body["modelId"], invocation_type or "InvokeModel") is None:
                raise AwsError("ValidationException", "The provided model identifier is invalid.")
            if not body["inputDataConfig"].get("s3InputDataConfig"):
                raise AwsError("ValidationException", "inputDataConfig must contain s3InputDataConfig.")
            if not body["outputDataConfig"].get("s3OutputDataConfig"):
                raise AwsError("ValidationException", "outputDataConfig must contain s3OutputDataConfig.")
            tags = {t["key"]: t["value"] for t in body.get("tags") or []}
            try:
                job_faults = self.faults.for_new_job(tags)
            except ValueError as err:
                raise AwsError("ValidationException", str(err)) from err
            # The quota is per base model and region ("... using a base model for <model>"), and a
            # smaller one per custom model.
            model, limit = _quota_key(body["modelId"]), self.quotas.max_concurrent_jobs
            if is_custom_model(body["modelId"]):
                limit = self.quotas.max_concurrent_custom_jobs
            active = sum(1 for j in jobs if j.status in ACTIVE and _quota_key(j.model_id) == model)
            if active >= limit:
                raise AwsError(
                    "ServiceQuotaExceededException",
                    f"You have reached the limit of {limit} submitted and "
                    f"in-progress batch inference jobs for {model}.",
                )
            if any(j.job_name == body["jobName"] for j in jobs):
                raise AwsError(
                    "ValidationException",
                    f"A job with the name {body['jobName']} already exists in this account.",
                )
            now = time.time()
            job_id = "".join(secrets.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(12))
            hours = body.get("timeoutDurationInHours")
            job = Job(
                job_id=job_id,
                job_arn=f"arn:aws:bedrock:{region}:{ACCOUNT_ID}:model-invocation-job/{job_id}",
                job_name=body["jobName"],
                model_id=body["modelId"],
                role_arn=body["roleArn"],
                input_data_config=body["inputDataConfig"],
                output_data_config=body["outputDataConfig"],
                submit_time=now,
                client_request_token=token,
                last_modified_time=now,
                status_since=now,
                job_expiration_time=now + (hours or DEFAULT_TIMEOUT_HOURS) * 3600,
                timeout_hours=hours,
                vpc_config=body.get("vpcConfig"),
                invocation_type=invocation_type,
                tags=list(body.get("tags") or []),
                faults=job_faults.to_dict(),
            )
            self.store.add(job)
        return _json({"jobArn": job.job_arn})

    def list(self, args: dict[str, str], region: str) -> Response:
        params: dict[str, Any] = dict(args)
        if "maxResults" in params:
            try:
                params["maxResults"] = int(params["maxResults"])
            except ValueError as err:
                raise AwsError("ValidationException", "maxResults must be a number.") from err
        for key in ("submitTimeAfter", "submitTimeBefore"):
            params.pop(key, None)
        validate("bedrock", "ListModelInvocationJobs", params)
        jobs = self._jobs_in(region)
        if "submitTimeAfter" in args:
            jobs = [j for j in jobs if j.submit_time > _parse_time(args["submitTimeAfter"])]
        if "submitTimeBefore" in args:
            jobs = [j for j in jobs if j.submit_time < _parse_time(args["submitTimeBefore"])]
        if "statusEquals" in args:
            jobs = [j for j in jobs if j.status == args["statusEquals"]]
        if "nameContains" in args:
            jobs = [j for j in jobs if args["nameContains"] in j.job_name]
        jobs.sort(key=lambda j: (j.submit_time, j.job_id), reverse=args.get("sortOrder") == "Descending")
        start = 0
        if "nextToken" in args:
            try:
                start = int(base64.urlsafe_b64decode(args["nextToken"].encode()).decode())
            except ValueError as err:
                raise AwsError("ValidationException", "The nextToken is not valid.") from err
        size = params.get("maxResults", 1000)
        page = jobs[start : start + size]
        out: dict[str, Any] = {
            "invocationJobSummaries": [{k: v for k, v in describe(j).items() if v is not None} for j in page]
        }
        if start + size < len(jobs):
            out["nextToken"] = base64.urlsafe_b64encode(str(start + size).encode()).decode()
        return _json(out)

    def list_tags(self, body: dict[str, Any], region: str) -> Response:
        validate("bedrock", "ListTagsForResource", body)
        arn = body["resourceARN"]
        if ":model-invocation-job/" not in arn:
            raise AwsError("ResourceNotFoundException", f"The resource {arn} could not be found.")
        return _json({"tags": self._find(arn, region).tags})
