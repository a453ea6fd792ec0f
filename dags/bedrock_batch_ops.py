"""Airflow DAG: on-call operations (list, stop, reconcile Bedrock batch jobs; list, release windows).

Manual only; the trigger form's ``action`` picks one branch, the others are skipped. The work is in
plugins/bedrock_batch/ops.py.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Generator
from contextlib import contextmanager
from functools import partial
from typing import Any

from airflow.sdk import DAG, Param, task

from bedrock_batch.ops import ANY_STATUS, JOB_STATUSES, MAX_RESULTS, RECONCILE_MODES, SORT_ORDERS

log = logging.getLogger(__name__)

SUBMIT_TASK = "batch_job.submit"
"""The pipeline DAGs' submit task (dag_factory); its return value names the job it submitted."""

DOC = """
### Bedrock batch job operations

Trigger with the form; `action` picks what runs:

* **list**: jobs by `status` (or `any`), `name_contains` and a submit-time window, newest first by
  default, up to `max_results` (pages of ListModelInvocationJobs are followed). The task log shows
  a table; the return value (XCom) is one small dict per job.
* **stop**: stop the job `job_arn`. A job that already ended is reported, not an error.
* **reconcile**: among the jobs matching the same filters, find the ones tagged by this project's
  pipelines (`bedrock-batch:dag-id`, `bedrock-batch:run-id`) that no DAG run tracks (the run is
  gone, or it finished without recording the job) and, per `reconcile_mode`:
  `report` them, `adopt` them (load their output into the pipeline's warehouse under the run that
  submitted them; ended jobs only), or `stop` them. Jobs reading input outside this deployment's
  pipelines' input folders belong to another deployment in the same account and are left alone.
* **windows**: the days each pipeline run holds (`pipeline`, or every pipeline), with the holding
  run's state in Airflow. A run holds its days from prepare until its output is loaded, so that a
  second run over them does not pay for the same rows. The claim of a run that is over stays listed
  until another run takes the days over.
* **release_window**: end the claims of run `run_id` in `pipeline`, for when Airflow does not have
  the holder (the run was deleted, or it belongs to another deployment) and you know it is over.

Where AWS is asked: with `pipeline` set, list, stop and reconcile go through that pipeline's
`aws.conn_id` and `aws.region`; without it, through the `aws_default` connection. `region`
overrides the region for list and reconcile; stop always asks in the region the job's ARN names.
Adopting reads each orphan's output through its own pipeline's connection. Nothing runs on a
schedule.
"""

with DAG(
    dag_id="bedrock_batch_ops",
    description="List, stop and reconcile Bedrock batch jobs (manual).",
    doc_md=DOC,
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["bedrock-batch", "ops"],
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
    },
    params={
        "action": Param(
            "list",
            type="string",
            enum=["list", "stop", "reconcile", "windows", "release_window"],
            title="Action",
            description="list jobs, stop one job, reconcile jobs no DAG run tracks; list or release the "
            "days pipeline runs hold.",
        ),
        "status": Param(
            ANY_STATUS,
            type="string",
            enum=[ANY_STATUS, *JOB_STATUSES],
            title="Status",
            description="list / reconcile: only jobs in this status.",
        ),
        "name_contains": Param(
            None,
            type=["null", "string"],
            title="Name contains",
            description="list / reconcile: only jobs whose name contains this text.",
        ),
        "submitted_after": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Submitted after",
            description=(
                "list / reconcile: only jobs submitted after this time (a date-time with its offset, "
                "e.g. 2026-01-31T00:00:00Z)."
            ),
        ),
        "submitted_before": Param(
            None,
            type=["null", "string"],
            format="date-time",
            title="Submitted before",
            description=(
                "list / reconcile: only jobs submitted before this time (a date-time with its offset, "
                "e.g. 2026-01-31T00:00:00Z)."
            ),
        ),
        "sort_order": Param(
            "Descending",
            type="string",
            enum=list(SORT_ORDERS),
            title="Sort order",
            description="By submit time; Descending lists the newest first.",
        ),
        "max_results": Param(
            100,
            type="integer",
            minimum=1,
            maximum=MAX_RESULTS,
            title="Max results",
            description="list / reconcile: look at no more than this many jobs.",
        ),
        "job_arn": Param(
            None,
            type=["null", "string"],
            title="Job ARN",
            description=(
                "stop: arn:aws:bedrock:<region>:<account>:model-invocation-job/<id> "
                "(asked in the ARN's region)"
            ),
        ),
        "region": Param(
            None,
            type=["null", "string"],
            title="Region",
            description=(
                "list / reconcile: the AWS region to look in; empty: the pipeline's aws.region, "
                "else the connection's"
            ),
        ),
        "reconcile_mode": Param(
            "report",
            type="string",
            enum=list(RECONCILE_MODES),
            title="Reconcile mode",
            description="reconcile: report orphans, adopt their output into the warehouse, or stop them.",
        ),
        "pipeline": Param(
            None,
            type=["null", "string"],
            title="Pipeline",
            description=(
                "list / stop / reconcile: ask AWS through this pipeline's connection and region "
                "(empty: aws_default); windows: only this pipeline; release_window: required. "
                "A pipeline is named by its DAG id."
            ),
        ),
        "run_id": Param(
            None,
            type=["null", "string"],
            title="Run id",
            description="release_window: the pipeline run whose window claim to end.",
        ),
    },
) as dag:

    @task.branch
    def choose(params: dict[str, Any]) -> str:
        """Run only the branch the ``action`` param names."""
        action = params["action"]
        log.info("Action: %s", action)
        return {
            "list": "list_jobs",
            "stop": "stop_job",
            "reconcile": "reconcile",
            "windows": "list_windows",
            "release_window": "release_window",
        }[action]

    def _filters(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "status": params["status"],
            "name_contains": params.get("name_contains"),
            "submitted_after": params.get("submitted_after"),
            "submitted_before": params.get("submitted_before"),
            "max_results": params["max_results"],
        }

    @contextmanager
    def _request_mistakes_fail() -> Generator[None, None, None]:
        """A mistake in the form (or a request AWS refuses as such) fails the task: retries cannot help."""
        from airflow.sdk.exceptions import AirflowFailException

        from bedrock_batch import ops

        try:
            yield
        except Exception as err:
            mistake = ops.request_mistake(err)
            if mistake is None:
                raise
            raise AirflowFailException(mistake) from err

    def _access(params: dict[str, Any], region: str | None = None) -> Any:
        """The connection and region to ask AWS through (``bedrock_batch.ops.aws_access``)."""
        from airflow.sdk import get_current_context

        from bedrock_batch import ops

        context = get_current_context()
        access = ops.aws_access(
            params.get("pipeline"),
            region if region is not None else params.get("region"),
            render=lambda value: context["task"].render_template(value, context),
        )
        log.info("Asking AWS through connection %s, region %s", access.conn_id, access.region or "(its own)")
        return access

    @task
    def list_jobs(params: dict[str, Any]) -> list[dict[str, Any]]:
        """Log a table of the matching jobs; return them as small dicts."""
        from bedrock_batch import ops

        filters = _filters(params)
        log.info("Listing Bedrock batch jobs: %s, sort %s", filters, params["sort_order"])
        with _request_mistakes_fail():
            rows = ops.list_jobs(_access(params).bedrock_hook(), sort_order=params["sort_order"], **filters)
        log.info("%d jobs\n%s", len(rows), ops.format_table(rows))
        return rows

    @task(multiple_outputs=False)
    def stop_job(params: dict[str, Any]) -> dict[str, Any]:
        """Stop the job ``job_arn`` names, asking in the region its ARN names."""
        from bedrock_batch import ops
        from bedrock_batch.hooks import BedrockBatchHook

        with _request_mistakes_fail():
            job_arn = ops.check_job_arn(params.get("job_arn"))
            log.info("Stopping Bedrock batch job %s", job_arn)
            access = _access(params, region=BedrockBatchHook.region_from_arn(job_arn))
            result = ops.stop_job(access.bedrock_hook(), job_arn)
        log.info(
            "Job %s: %s -> %s (%s)",
            job_arn,
            result["status_before"],
            result["status"],
            "stopped by this call" if result["stopped"] else "this call stopped nothing",
        )
        return result

    @task
    def reconcile(params: dict[str, Any], ti: Any = None) -> list[dict[str, Any]]:
        """Find orphans and report, adopt or stop them; fail after all were tried if any failed."""
        from airflow.sdk import get_current_context
        from airflow.sdk.exceptions import AirflowException, AirflowFailException

        from bedrock_batch import ops

        mode = params["reconcile_mode"]
        filters = _filters(params)
        log.info("Reconciling Bedrock batch jobs (%s): %s", mode, filters)
        context = get_current_context()

        def render(value: str) -> str:
            return context["task"].render_template(value, context)

        adopter = None
        if mode == "adopt":
            adopter = ops.JobAdopter(
                # Each orphan's output is read through its own pipeline's connection.
                s3_for=lambda target: ops.aws_access(target.config.name, render=render).s3_client(),
                pipeline_for=lambda dag_id: ops.pipeline_target(dag_id, render=render),
            )
        # Jobs reading input outside this deployment's pipelines are another deployment's.
        roots = ops.deployment_input_roots(render)
        with _request_mistakes_fail():
            results = ops.reconcile(
                _access(params).bedrock_hook(),
                is_tracked=_tracker(ti),
                mode=mode,
                adopter=adopter,
                input_roots=roots,
                **filters,
            )
        columns = ("submit_time", "status", "dag_id", "run_id", "action", "job_arn")
        log.info("%d orphans\n%s", len(results), ops.format_table(results, columns))
        failed = [result for result in results if result["action"] == "failed"]
        if failed:
            # No retry when none of the failures can pass on its own (e.g. no pipeline to adopt into).
            error = AirflowException if any(item["retryable"] for item in failed) else AirflowFailException
            raise error(
                f"{len(failed)} of {len(results)} orphans could not be handled: "
                + "; ".join(f"{item['job_arn']}: {item['error']}" for item in failed)
            )
        return results

    def _tracker(ti: Any) -> Any:
        """Whether a DAG run tracks a job, asked through the Task SDK (one lookup per run)."""
        from bedrock_batch.ops import dag_run_state, run_tracks_job

        runs: dict[tuple[str, str], tuple[str | None, list[str]]] = {}

        def is_tracked(ref: Any, job_arn: str) -> bool:
            key = (ref.dag_id, ref.run_id)
            if key not in runs:
                state = dag_run_state(ti, ref.dag_id, ref.run_id)
                arns: list[str] = []
                if state is not None:
                    pulled = ti.xcom_pull(task_ids=SUBMIT_TASK, dag_id=ref.dag_id, run_id=ref.run_id)
                    values = pulled if isinstance(pulled, list) else [pulled]
                    arns = [
                        value["job_arn"]
                        for value in values
                        if isinstance(value, dict) and value.get("job_arn")
                    ]
                runs[key] = (state, arns)
            state, arns = runs[key]
            return run_tracks_job(run_state=state, submitted_arns=arns, job_arn=job_arn)

        return is_tracked

    @task
    def list_windows(params: dict[str, Any], ti: Any = None) -> list[dict[str, Any]]:
        """Log the days each pipeline run holds, with the holder's state in Airflow."""
        from bedrock_batch import ops

        run_state = partial(ops.dag_run_state, ti)
        if params.get("pipeline"):
            with _request_mistakes_fail():
                warehouse = ops.pipeline_warehouse(params["pipeline"])
            rows, failures = ops.window_claim_rows(warehouse, params["pipeline"], run_state), {}
        else:
            rows, failures = ops.list_window_claims(ops.pipeline_names(), run_state)
        columns = ("pipeline", "window_start", "window_end", "prompt_version", "run_id", "run_state")
        log.info("%d window claims\n%s", len(rows), ops.format_table(rows, columns) if rows else "(none)")
        if failures:  # the others' claims are logged above; the task fails so the gap is not missed
            raise RuntimeError(
                f"window claims of {len(failures)} pipeline(s) could not be read: "
                + "; ".join(f"{name}: {why}" for name, why in failures.items())
            )
        return rows

    @task(multiple_outputs=False)
    def release_window(params: dict[str, Any], ti: Any = None) -> dict[str, Any]:
        """End the window claims of ``run_id`` in ``pipeline``."""
        from bedrock_batch import ops
        from bedrock_batch.errors import ConfigError

        pipeline = params.get("pipeline")
        with _request_mistakes_fail():
            if not pipeline:
                raise ConfigError("pipeline: name the pipeline (its DAG id) whose window claim to release")
            result = ops.release_window_claim(
                ops.pipeline_warehouse(pipeline),
                pipeline,
                params.get("run_id"),
                partial(ops.dag_run_state, ti),
            )
        log.info("Released %d window claims of run %s (%s)", result["released"], result["run_id"], pipeline)
        return result

    choose() >> [list_jobs(), stop_job(), reconcile(), list_windows(), release_window()]
