"""The admin endpoint under ``/_local/``: health, faults, quotas, the call log and jobs.

- ``GET /_local/health``
- ``GET|POST|DELETE /_local/faults`` (POST merges a JSON object, DELETE resets)
- ``GET|POST|DELETE /_local/quotas`` (POST sets fields, DELETE restores the start-up values)
- ``GET|DELETE /_local/calls``
- ``GET /_local/jobs`` (internal view of every job)
"""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from werkzeug.wrappers import Request, Response

if TYPE_CHECKING:
    from local_aws.server import LocalAws


def _json(data: Any, status: int = 200) -> Response:
    return Response(json.dumps(data, default=str), status, content_type="application/json")


class AdminApi:
    """Test-facing controls; not an AWS API, so it is never recorded in the call log."""

    def __init__(self, app: LocalAws) -> None:
        self.app = app
        self._initial_quotas = dataclasses.replace(app.quotas)

    def handle(self, request: Request) -> Response:
        name = request.path.removeprefix("/_local/").strip("/")
        method = request.method
        try:
            body = json.loads(request.get_data() or b"{}") if method == "POST" else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            if name == "health":
                return _json({"status": "ok", "jobs": len(self.app.store.all())})
            if name == "faults":
                return self._faults(method, body)
            if name == "quotas":
                return self._quotas(method, body)
            if name == "calls":
                if method == "DELETE":
                    self.app.calls.clear()
                return _json({"calls": self.app.calls.list()})
            if name == "jobs":
                return _json({"jobs": [job.to_dict() for job in self.app.store.all()]})
        except ValueError as err:
            return _json({"error": str(err)}, 400)
        return _json({"error": f"no admin resource {name!r}"}, 404)

    def _faults(self, method: str, body: dict[str, Any]) -> Response:
        if method == "DELETE":
            self.app.faults.reset(self.app.settings.runtime_rps)
        elif method == "POST":
            self.app.faults.update(body)
        return _json(self.app.faults.to_dict())

    def _quotas(self, method: str, body: dict[str, Any]) -> Response:
        if method == "DELETE":
            self.app.quotas.update(self._initial_quotas.to_dict())
        elif method == "POST":
            self.app.quotas.update(body)
        return _json(self.app.quotas.to_dict())
