"""The Bedrock runtime: InvokeModel and Converse with the batch worker's model logic.

Requests above ``runtime_rps`` per second (a one-second sliding window) get ThrottlingException.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from werkzeug.wrappers import Request, Response

from local_aws.errors import AwsError, throttled
from local_aws.faults import ServerFaults
from local_aws.models import ModelInputError, family_name, invoke, is_custom_model


class Runtime:
    """``POST /model/{modelId}/invoke`` and ``POST /model/{modelId}/converse``."""

    def __init__(self, faults: ServerFaults) -> None:
        self.faults = faults
        self._lock = threading.Lock()
        self._recent: collections.deque[float] = collections.deque()

    def operation_for(self, request: Request) -> str:
        path = self._path(request)
        if request.method == "POST" and path.startswith("/model/"):
            if path.endswith("/invoke"):
                return "InvokeModel"
            if path.endswith("/converse"):
                return "Converse"
        raise AwsError("UnknownOperationException", f"{request.method} {path} is not emulated by local_aws.")

    @staticmethod
    def _path(request: Request) -> str:
        raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
        return urlsplit(raw).path if raw else request.path

    def _throttle(self) -> None:
        limit = self.faults.runtime_rps
        if limit is None:
            return
        now = time.monotonic()
        with self._lock:
            while self._recent and now - self._recent[0] > 1.0:
                self._recent.popleft()
            if len(self._recent) >= limit:
                raise throttled()
            self._recent.append(now)

    def handle(self, operation: str, request: Request) -> Response:
        self._throttle()
        path = self._path(request)
        model_id = unquote(path[len("/model/") :].rsplit("/", 1)[0])
        try:
            body: Any = json.loads(request.get_data() or b"null")
        except ValueError as err:
            raise AwsError(
                "ValidationException", "Malformed input request: the body is not valid JSON."
            ) from err
        if is_custom_model(model_id):
            # As in the service: a custom model runs on demand only through a deployment of it (or
            # Provisioned Throughput), whose ARN names no base model this stand-in could answer as.
            raise AwsError(
                "ValidationException",
                "On-demand inference is not supported for a custom model; use a custom model deployment.",
            )
        if operation == "Converse":
            invocation_type = "Converse"
        else:
            invocation_type = "InvokeModel"
            if family_name(model_id, body=body) is None:
                raise AwsError("ValidationException", "The provided model identifier is invalid.")
        try:
            output = invoke(model_id, invocation_type, body)
        except ModelInputError as err:
            raise AwsError("ValidationException", str(err)) from err
        return Response(json.dumps(output), 200, content_type="application/json")
