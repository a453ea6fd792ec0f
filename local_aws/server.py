"""The WSGI app: one endpoint routed by the SigV4 credential scope, as moto's server routes.

The runtime signs with the name ``bedrock`` as the control plane does; ``/model/...`` paths are
the runtime's (the control plane has none).

``bedrock``, ``bedrock-runtime`` and ``servicequotas`` are served here; everything else (S3, STS)
goes to moto's own server app, which shares its in-process backends with the job worker.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from werkzeug.wrappers import Request, Response

from local_aws.admin import AdminApi
from local_aws.bedrock_control import ControlPlane
from local_aws.calls import CallLog
from local_aws.errors import AwsError, internal, throttled
from local_aws.faults import ServerFaults
from local_aws.jobs import JobStore, JobWorker
from local_aws.quotas import applied_quotas, service_quotas
from local_aws.runtime import Runtime
from local_aws.settings import Settings

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


def credential_scope(environ: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(service, region, access key id) from ``Credential=AKID/date/region/service/aws4_request``,
    else (None, None, None)."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    try:
        scope = auth.split(",")[0].split()[1].split("=", 1)[1]
        access_key, _, region, service, _ = scope.split("/")
    except (IndexError, ValueError):
        return None, None, None
    return service.lower(), region, access_key


def s3_operation(method: str, path: str, query: dict[str, list[str]], environ: dict[str, Any]) -> str:
    """The S3 API operation a path-style request names (for the call log)."""
    parts = path.lstrip("/").split("/", 1)
    bucket, key = parts[0], (parts[1] if len(parts) > 1 else "")
    if not bucket:
        return "ListBuckets"
    if not key:
        if "delete" in query:
            return "DeleteObjects"
        if "uploads" in query:
            return "ListMultipartUploads"
        table = {"PUT": "CreateBucket", "DELETE": "DeleteBucket", "HEAD": "HeadBucket"}
        if method == "GET":
            return "ListObjectsV2" if query.get("list-type") == ["2"] else "ListObjects"
        return table.get(method, f"{method}Bucket")
    if "uploads" in query and method == "POST":
        return "CreateMultipartUpload"
    if "uploadId" in query:
        return {
            "PUT": "UploadPart",
            "POST": "CompleteMultipartUpload",
            "DELETE": "AbortMultipartUpload",
            "GET": "ListParts",
        }.get(method, "UploadPart")
    if method == "PUT":
        return "CopyObject" if "HTTP_X_AMZ_COPY_SOURCE" in environ else "PutObject"
    return {"GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(method, method)


def error_response(err: AwsError, protocol: str = "rest-json") -> Response:
    if protocol == "json":
        body = {"__type": err.code, "message": err.message}
        return Response(json.dumps(body), err.status, content_type="application/x-amz-json-1.1")
    resp = Response(json.dumps({"message": err.message}), err.status, content_type="application/json")
    resp.headers["x-amzn-ErrorType"] = err.code
    return resp


class LocalAws:
    """The stand-in as a WSGI application; ``close()`` stops its worker."""

    def __init__(self, settings: Settings) -> None:
        from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

        self.settings = settings
        self.calls = CallLog()
        self.faults = ServerFaults(seed=settings.seed, runtime_rps=settings.runtime_rps)
        self.quotas = settings.quotas
        self.store = JobStore(settings.state_dir)
        self.worker = JobWorker(self.store, settings, self.quotas)
        self.control = ControlPlane(self.store, self.worker, self.faults, self.quotas, settings)
        self.runtime = Runtime(self.faults)
        self.admin = AdminApi(self)
        self._moto = DomainDispatcherApplication(create_backend_app)
        self.worker.start()

    def close(self) -> None:
        self.worker.stop()

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_local/"):
            return self.admin.handle(Request(environ))(environ, start_response)
        service, region, access_key = credential_scope(environ)
        signer = {"region": region, "access_key": access_key}
        if service == "bedrock" and path.startswith("/model/"):
            service = "bedrock-runtime"  # the runtime signs as "bedrock" too; its paths tell it apart
        if service in ("bedrock", "bedrock-runtime", "servicequotas"):
            request = Request(environ)
            operation, response = self._serve_own(service, region or self.settings.region, request)
            self.calls.record(service, operation, response.status_code, **signer)
            return response(environ, start_response)
        return self._serve_moto(environ, start_response, service or "s3", signer)

    def _serve_own(self, service: str, region: str, request: Request) -> tuple[str, Response]:
        operation = "Unknown"
        protocol = "json" if service == "servicequotas" else "rest-json"
        try:
            if service == "bedrock":
                operation = self.control.operation_for(request)
                self._api_faults(operation)
                return operation, self.control.handle(operation, request, region)
            if service == "bedrock-runtime":
                operation = self.runtime.operation_for(request)
                self._api_faults(operation)
                return operation, self.runtime.handle(operation, request)
            operation = request.headers.get("X-Amz-Target", ".").split(".", 1)[1]
            self._api_faults(operation)
            return operation, self._service_quotas(operation, request, region)
        except AwsError as err:
            return operation, error_response(err, protocol)
        except Exception:
            log.exception("local_aws: %s %s failed", service, operation)
            return operation, error_response(internal(), protocol)

    def _api_faults(self, operation: str) -> None:
        fault = self.faults.api_fault(operation)
        if fault == "throttle":
            raise throttled()
        if fault == "internal":
            raise internal()
        if fault == "access_denied":
            raise AwsError("AccessDeniedException", f"User is not authorized to perform bedrock:{operation}")

    def _service_quotas(self, operation: str, request: Request, region: str) -> Response:
        body = json.loads(request.get_data() or b"{}")
        if body.get("ServiceCode") != "bedrock":
            raise AwsError(
                "NoSuchResourceException", f"The service {body.get('ServiceCode')} is not emulated."
            )
        if operation in ("ListServiceQuotas", "ListAWSDefaultServiceQuotas"):
            quotas = (
                applied_quotas(self.quotas, region)
                if operation == "ListServiceQuotas"
                else service_quotas(self.quotas, region, defaults=True)
            )
            start = int(body.get("NextToken") or 0)
            size = int(body.get("MaxResults") or 100)
            page = quotas[start : start + size]
            out: dict[str, Any] = {"Quotas": page}
            if start + size < len(quotas):
                out["NextToken"] = str(start + size)
        elif operation in ("GetServiceQuota", "GetAWSDefaultServiceQuota"):
            quotas = (
                applied_quotas(self.quotas, region)
                if operation == "GetServiceQuota"
                else service_quotas(self.quotas, region, defaults=True)
            )
            match = [q for q in quotas if q["QuotaCode"] == body.get("QuotaCode")]
            if not match:
                raise AwsError(
                    "NoSuchResourceException", f"The quota {body.get('QuotaCode')} does not exist."
                )
            out = {"Quota": match[0]}
        else:
            raise AwsError("UnknownOperationException", f"{operation} is not emulated by local_aws.")
        return Response(json.dumps(out), 200, content_type="application/x-amz-json-1.1")

    def _serve_moto(
        self,
        environ: dict[str, Any],
        start_response: StartResponse,
        service: str,
        signer: dict[str, str | None],
    ) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if service == "s3":
            operation = s3_operation(method, environ.get("PATH_INFO", ""), query, environ)
        else:
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            form = parse_qs(body.decode("utf-8", "replace"))
            operation = (form.get("Action") or query.get("Action") or ["Unknown"])[0]
        status_seen: list[int] = []

        def recording_start_response(status: str, headers: list[tuple[str, str]], *args: Any) -> Any:
            status_seen.append(int(status.split()[0]))
            return start_response(status, headers, *args)

        result = self._moto(environ, recording_start_response)
        where: dict[str, str | None] = {}
        if service == "s3":
            # PATH_INFO is decoded already (WSGI): /bucket/key as the client named it.
            where = {"path": environ.get("PATH_INFO", ""), "list_prefix": (query.get("prefix") or [None])[0]}
        self.calls.record(service, operation, status_seen[0] if status_seen else 0, **signer, **where)
        return result
