"""AirflowPlugin: the "Bedrock batch jobs" page in the Airflow UI.

A small FastAPI app mounted by the API server at ``/bedrock-batch`` (server-rendered HTML, no
build step) and an external view that puts it in the UI's navigation (rendered in an iframe at
``/plugin/bedrock-batch``). Every route requires Airflow's own authentication (the UI's JWT cookie
or an ``Authorization: Bearer`` token, checked by Airflow's ``get_user``) and the auth manager's
permission on DAG runs: read to list, edit of the job's DAG (from its tags) to stop.

Routes (under the prefix): ``GET /`` the page; ``GET /api/jobs`` the same rows as JSON;
``POST /api/jobs/stop`` with ``{"job_arn": ..., "pipeline": ...}``. Jobs come from
ListModelInvocationJobs through ``BedrockBatchHook``, on a pipeline's own AWS connection and region
when the ``pipeline`` query names one (``ops.aws_access``), else on ``aws_default``. Importing this
module opens nothing: Airflow's security modules and the AWS clients are loaded on the first
request.
"""

import html
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template
from threading import Lock
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel

from bedrock_batch.job_tags import RunRef, run_ref

log = logging.getLogger(__name__)

URL_PREFIX = "/bedrock-batch"
PAGE_TITLE = "Bedrock batch jobs"
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_TAG_WORKERS = 8
_TAG_CACHE_SIZE = 5000
_TEMPLATE = Path(__file__).with_name("ui") / "jobs.html"

Authorizer = Callable[[Any, str, str | None], bool]
"""``(user, method, dag_id or None for every DAG) -> allowed``, asked of Airflow's auth manager."""


# -- auth -----------------------------------------------------------------------------------------


async def current_user(request: Request) -> Any:
    """The Airflow user of the request, exactly as Airflow's REST API finds it (cookie or bearer)."""
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi.security import HTTPAuthorizationCredentials

    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    bearer = HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials) if credentials else None
    return await get_user(request, None, bearer)


def airflow_authorizer(user: Any, method: str, dag_id: str | None) -> bool:
    """The auth manager's verdict on DAG runs of ``dag_id`` (None: of every DAG)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method=method, access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    )


# -- data -----------------------------------------------------------------------------------------


class StopRequest(BaseModel):
    job_arn: str
    pipeline: str = ""
    """The pipeline whose AWS connection to stop the job through; empty: aws_default."""


class RunRefCache:
    """Job ARN -> the run its tags name; tags never change after a job is created."""

    def __init__(self, size: int = _TAG_CACHE_SIZE) -> None:
        self.size = size
        self._refs: dict[str, RunRef | None] = {}
        self._lock = Lock()

    def lookup(self, hook: Any, job_arns: list[str]) -> dict[str, RunRef | None]:
        """The runs of ``job_arns`` (None: the job names none); unknown ones are fetched in parallel.
        A job whose tags could not be read is left out, so the page can say so."""
        with self._lock:
            # Copied now: fetching may fill the cache past its size, which empties it.
            cached = {arn: self._refs[arn] for arn in job_arns if arn in self._refs}
        missing = [arn for arn in job_arns if arn not in cached]

        def fetch(arn: str) -> tuple[str, RunRef | None, bool]:
            try:
                return arn, run_ref(hook.get_job_tags(arn)), True
            except Exception as error:  # the page still renders, without this job's run link
                log.warning("Could not read the tags of %s: %s", arn, error)
                return arn, None, False

        if missing:
            with ThreadPoolExecutor(max_workers=min(_TAG_WORKERS, len(missing))) as pool:
                fetched = list(pool.map(fetch, missing))
            with self._lock:
                if len(self._refs) + len(fetched) > self.size:
                    self._refs.clear()
                self._refs.update({arn: ref for arn, ref, ok in fetched if ok})
            cached.update({arn: ref for arn, ref, ok in fetched if ok})
        return cached


def _ui_root(request: Request) -> str:
    """The Airflow UI's path root, from the prefix the API server mounted this app under."""
    root = str(request.scope.get("root_path") or "")
    return root[: -len(URL_PREFIX)] if root.endswith(URL_PREFIX) else ""


def dag_run_path(ui_root: str, ref: RunRef) -> str:
    """The Airflow 3 UI page of a DAG run."""
    return f"{ui_root}/dags/{quote(ref.dag_id, safe='')}/runs/{quote(ref.run_id, safe='')}"


# -- page -----------------------------------------------------------------------------------------


def _progress_cell(row: dict[str, Any]) -> str:
    total, processed = row.get("total_records"), row.get("processed_records")
    if not total:
        return '<span class="counts">no record counts yet</span>'
    success, errors = row.get("success_records") or 0, row.get("error_records") or 0
    return (
        f'<progress value="{processed or 0}" max="{total}">{row.get("percent") or 0}%</progress> '
        f'<span class="counts">{processed or 0}/{total} ({success} ok, {errors} errors)</span>'
    )


def _row_html(row: dict[str, Any]) -> str:
    from bedrock_batch.hooks import ACTIVE_STATUSES

    esc = html.escape
    status = str(row.get("status") or "")
    message = f'<div class="message">{esc(row["message"])}</div>' if row.get("message") else ""
    run = (
        f'<a class="run-link" href="{esc(row["dag_run_url"])}">'
        f"{esc(row['dag_id'])} / {esc(row['run_id'])}</a>"
        if row.get("dag_run_url")
        else '<span class="counts">not submitted by a DAG run</span>'
        if row.get("tags_read", True)
        else '<span class="counts">DAG run unknown: its tags could not be read (see the API log)</span>'
    )
    stop = (
        f'<button class="stop" type="button" data-arn="{esc(row["job_arn"])}" '
        f'data-name="{esc(str(row.get("job_name")))}" onclick="askToStop(this)">Stop</button>'
        if status in ACTIVE_STATUSES
        else ""
    )
    return (
        f'<tr data-job-arn="{esc(row["job_arn"])}" data-status="{esc(status)}">'
        f'<td class="name" title="{esc(row["job_arn"])}">{esc(str(row.get("job_name")))}{message}</td>'
        f'<td><span class="status status-{esc(status)}">{esc(status)}</span></td>'
        f"<td>{_progress_cell(row)}</td>"
        f"<td>{esc(row.get('submit_time') or '')}</td><td>{esc(row.get('end_time') or '')}</td>"
        f"<td>{run}</td><td>{stop}</td></tr>"
    )


def render_page(
    request: Request,
    rows: list[dict[str, Any]],
    *,
    status: str,
    name: str,
    limit: int,
    error: str | None,
    region: str = "",
    pipeline: str = "",
    access: Any = None,
) -> str:
    """The page; ``access`` (``ops.AwsAccess``) names the connection and region listed, if any."""
    from bedrock_batch.ops import ANY_STATUS, JOB_STATUSES, pipeline_names

    esc = html.escape
    base = str(request.scope.get("root_path") or "")
    options = "".join(
        f'<option value="{value}"{" selected" if value == status else ""}>{value}</option>'
        for value in (ANY_STATUS, *JOB_STATUSES)
    )
    chosen = {"status": status, "name": name}
    filters = {key: value for key, value in chosen.items() if value and value != ANY_STATUS}
    pipelines = "".join(
        f'<option value="{esc(value)}"{" selected" if value == pipeline else ""}>{esc(value)}</option>'
        for value in pipeline_names()
    )
    summary = f"{len(rows)} most recent jobs" + (f" matching {esc(urlencode(filters))}" if filters else "")
    if access is not None:
        summary += f", newest first, on connection {esc(access.conn_id)}"
        summary += f" in {esc(access.region)}" if access.region else ""
    body = "".join(_row_html(row) for row in rows) or '<tr><td colspan="7" class="empty">No jobs.</td></tr>'
    return Template(_TEMPLATE.read_text(encoding="utf-8")).substitute(
        summary=summary,
        page_url=esc(f"{base}/"),
        stop_url=esc(f"{base}/api/jobs/stop"),
        status_options=options,
        name=esc(name),
        region=esc(region),
        pipeline=esc(pipeline),
        pipeline_options=pipelines,
        limit=limit,
        max_limit=MAX_LIMIT,
        error=f'<p class="error">{esc(error)}</p>' if error else "",
        rows=body,
    )


# -- app ------------------------------------------------------------------------------------------


def create_app(*, authorizer: Authorizer = airflow_authorizer) -> FastAPI:
    """The batch-jobs app; ``authorizer`` is swappable for tests."""
    app = FastAPI(title=PAGE_TITLE, docs_url=None, redoc_url=None, openapi_url=None)
    refs = RunRefCache()

    def can_read(user: Annotated[Any, Depends(current_user)]) -> Any:
        if not authorizer(user, "GET", None):
            raise HTTPException(status_code=403, detail="Forbidden: reading DAG runs is not allowed")
        return user

    def jobs(request: Request, status: str, name: str, limit: int, access: Any) -> list[dict[str, Any]]:
        from bedrock_batch import ops

        hook = access.bedrock_hook()
        rows = ops.list_jobs(hook, status=status, name_contains=name or None, max_results=limit)
        found = refs.lookup(hook, [row["job_arn"] for row in rows])
        ui_root = _ui_root(request)
        for row in rows:
            ref = found.get(row["job_arn"])
            row["tags_read"] = row["job_arn"] in found
            row["dag_id"] = ref.dag_id if ref else None
            row["run_id"] = ref.run_id if ref else None
            row["dag_run_url"] = dag_run_path(ui_root, ref) if ref else None
        return rows

    @app.get("/", response_class=HTMLResponse)
    def jobs_page(
        request: Request,
        _user: Annotated[Any, Depends(can_read)],
        status: str = "any",
        name: str = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        region: str = "",
        pipeline: str = "",
    ) -> HTMLResponse:
        """The page: recent jobs with status, progress, their DAG run and a Stop button."""
        from bedrock_batch import ops
        from bedrock_batch.errors import ConfigError

        error, rows, access = None, [], None
        pipeline = pipeline.strip()  # as aws_access reads it, so the form shows what was listed
        try:
            access = ops.aws_access(pipeline, region)
            rows = jobs(request, status, name, limit, access)
        except ConfigError as problem:
            error = str(problem)
        except Exception as problem:  # show AWS trouble on the page instead of a bare 500
            log.exception("Listing Bedrock batch jobs failed")
            error = f"Listing jobs failed: {type(problem).__name__}: {problem}"
        return HTMLResponse(
            render_page(
                request,
                rows,
                status=status,
                name=name,
                limit=limit,
                error=error,
                region=region,
                pipeline=pipeline,
                access=access,
            )
        )

    @app.get("/api/jobs")
    def jobs_json(
        request: Request,
        _user: Annotated[Any, Depends(can_read)],
        status: str = "any",
        name: str = "",
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
        region: str = "",
        pipeline: str = "",
    ) -> list[dict[str, Any]]:
        """The page's rows as JSON."""
        from bedrock_batch import ops
        from bedrock_batch.errors import ConfigError

        try:
            return jobs(request, status, name, limit, ops.aws_access(pipeline, region))
        except ConfigError as problem:
            raise HTTPException(status_code=400, detail=str(problem)) from None

    @app.post("/api/jobs/stop")
    def stop(body: StopRequest, user: Annotated[Any, Depends(can_read)]) -> dict[str, Any]:
        """Stop a job; needs edit permission on DAG runs of the job's DAG (every DAG if untagged).

        Reading DAG runs is asked first, before Bedrock is: a user who may not list the jobs learns
        nothing about them from here (not even whether an ARN exists).
        """
        from botocore.exceptions import ClientError

        from bedrock_batch import ops
        from bedrock_batch.errors import ConfigError
        from bedrock_batch.hooks import BedrockBatchHook

        try:
            job_arn = ops.check_job_arn(body.job_arn)
            # Asked where the job runs, through the pipeline's connection.
            access = ops.aws_access(body.pipeline, BedrockBatchHook.region_from_arn(job_arn))
        except ConfigError as problem:
            raise HTTPException(status_code=400, detail=str(problem)) from None
        hook = access.bedrock_hook()
        try:
            ref = run_ref(hook.get_job_tags(job_arn))
            if not authorizer(user, "PUT", ref.dag_id if ref else None):
                raise HTTPException(status_code=403, detail="Forbidden: editing this job's DAG runs")
            result = ops.stop_job(hook, job_arn)
        except ClientError as problem:
            code = problem.response.get("Error", {}).get("Code", "")
            status = (
                404 if code == "ResourceNotFoundException" else 409 if code == "ValidationException" else 502
            )
            raise HTTPException(status_code=status, detail=f"{code}: {problem}") from None
        log.info("Stop of Bedrock batch job %s asked from the batch-jobs page: %s", job_arn, result["status"])
        return result

    return app


app = create_app()


class BedrockBatchPlugin(AirflowPlugin):
    """Registers the batch-jobs app and its navigation entry."""

    name = "bedrock_batch"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": PAGE_TITLE}]
    external_views = [
        {
            "name": PAGE_TITLE,
            "href": f"{URL_PREFIX.lstrip('/')}/",
            "url_route": "bedrock-batch",
            "destination": "nav",
            "category": "browse",
        }
    ]
