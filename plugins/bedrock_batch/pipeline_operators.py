"""The nightly pipeline's own steps as thin operators: prepare, collect, on demand, report.

Each operator reloads its pipeline config by name (a small YAML read), renders the environment
values it is given as template fields, and calls the library; the work itself lives in prepare.py,
collect.py, on_demand.py and report.py so it can be tested without Airflow.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from bedrock_batch.config import PIPELINES_DIR, PipelineConfig, load_pipeline
from bedrock_batch.errors import ConfigError, EarlierTryError
from bedrock_batch.job_status import ACTIVE_STATUSES

if TYPE_CHECKING:
    from airflow.sdk import Context

    from bedrock_batch.staging import StagedJob
    from bedrock_batch.warehouse import Warehouse

log = logging.getLogger(__name__)

PREPARE_TASK = "prepare"
PLAN_KEY = "plan"
SUBMIT_TASK = "batch_job.submit"
COLLECT_TASK = "batch_job.collect"
ON_DEMAND_TASK = "run_on_demand"


def run_liveness(
    ti: Any, dag_id: str, active_jobs: Callable[[str], list[str]]
) -> Callable[[str], bool | None]:
    """Whether a run of ``dag_id`` is still in flight, for :meth:`Warehouse.claim_window`.

    ``True`` while Airflow has it queued or running, or while Bedrock still runs one of its jobs
    (``active_jobs(run_id)``: a failed run may leave jobs that bill and finish); ``False`` when
    Airflow has it finished and Bedrock runs none of its jobs. ``None`` (the claim's TTL decides)
    when Airflow does not have the run (deleted, or another deployment's sharing the warehouse,
    which may be staging right now) and Bedrock runs none of its jobs, or when either errs.
    """

    from bedrock_batch.ops import dag_run_state

    def is_live(run_id: str) -> bool | None:
        try:
            state = dag_run_state(ti, dag_id, run_id)
            if state in {"queued", "running"}:
                return True
            jobs = active_jobs(run_id)
        except Exception as err:  # the claim's TTL decides
            log.warning("Could not tell whether run %s of %s is over: %s", run_id, dag_id, err)
            return None
        if jobs:
            log.warning("Run %s of %s is not running in Airflow, but its jobs %s are", run_id, dag_id, jobs)
            return True
        return False if state is not None else None

    return is_live


def rendered_text(value: Any) -> str | None:
    """A rendered setting as text: native rendering turns an all-digit value (an account id) into an int."""
    return None if value is None or value == "" else str(value)


def task_states_this_try(ti: Any, dag_id: str, run_id: str) -> dict[str, str]:
    """Airflow's states, in run ``run_id``, of the tasks the report reads, in one call: ``prepare``,
    each collect task (as ``<task_id>_<map_index>``) and ``run_on_demand``.

    A task's XComs are cleared only when it starts again. After a run is cleared, a task that fails
    before it starts, or never runs, still holds what the earlier try of the run pushed: only the
    state of each task in this try says whether its XComs are this try's.
    """
    states = ti.get_task_states(
        dag_id=dag_id, task_ids=[PREPARE_TASK, COLLECT_TASK, ON_DEMAND_TASK], run_ids=[run_id]
    )
    return {key: str(getattr(state, "value", state)) for key, state in (states.get(run_id) or {}).items()}


def plan_of_this_try(ti: Any, states: dict[str, str], run_id: str) -> dict[str, Any]:
    """prepare's plan, once Airflow has prepare succeeded in this try of the run (``states``, from
    :func:`task_states_this_try`): an earlier try's plan reported as this try's would end a failed
    rerun green.
    """
    state = states.get(PREPARE_TASK)
    if state != "success":  # final: the report runs once every task upstream has finished
        raise AirflowFailException(
            f"{PREPARE_TASK} did not succeed in this try of run {run_id} (its state: {state}): "
            "nothing this try staged or submitted can be reported"
        )
    plan = ti.xcom_pull(task_ids=PREPARE_TASK, key=PLAN_KEY)
    if not plan:
        raise AirflowException(f"{PREPARE_TASK} succeeded in run {run_id} but left no plan")
    return plan


def collected_outcomes(ti: Any, jobs: int, states: dict[str, str]) -> list[dict[str, Any]]:
    """The outcome of every job collected in this try of the run; a job whose collect failed has none.

    Only collect tasks Airflow has succeeded in this try count: one that failed before it started
    (a lost worker) or never ran still holds the outcome an earlier try of the run pushed, for a job
    of that try. A task marked successful by hand never ran either; its earlier outcome is read.
    """
    if not jobs:
        return []
    pulled = ti.xcom_pull(task_ids=COLLECT_TASK, map_indexes=list(range(jobs)), default=None)
    if isinstance(pulled, dict):
        pulled = [pulled]
    return [
        outcome
        for index, outcome in enumerate(pulled or [])
        if outcome and states.get(f"{COLLECT_TASK}_{index}") == "success"
    ]


def on_demand_outcome(ti: Any, states: dict[str, str]) -> dict[str, Any] | None:
    """The on-demand task's outcome when it succeeded in this try of the run (see collected_outcomes)."""
    if states.get(ON_DEMAND_TASK) != "success":
        return None
    return ti.xcom_pull(task_ids=ON_DEMAND_TASK, default=None)


class _PipelineOperator(BaseOperator):
    """Shared plumbing: the pipeline's config, its warehouse, and AWS clients from the connection."""

    ui_color = "#e8f4fa"

    def __init__(
        self,
        *,
        pipeline: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        expected_bucket_owner: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.expected_bucket_owner = expected_bucket_owner

    @cached_property
    def config(self) -> PipelineConfig:
        return load_pipeline(PIPELINES_DIR / f"{self.pipeline}.yaml")

    @cached_property
    def warehouse(self) -> Warehouse:
        from bedrock_batch.warehouse import Warehouse

        tables = self.config.warehouse.tables()
        # Claims on pending keys outlive the longest job this pipeline can submit, plus a day.
        claim_ttl = dt.timedelta(hours=self.config.jobs.timeout_hours + 24)
        return Warehouse(self.config.source.conn_id, tables, pipeline=self.config.name, claim_ttl=claim_ttl)

    def _planned_invocation_type(self, plan: dict[str, Any]) -> str:
        """The API prepare built the run's bodies for; the config's for a plan from before it was
        recorded. A deploy that switches the API mid-run must not send Messages bodies to Converse."""
        return str(plan.get("invocation_type") or self.config.model.invocation_type)

    def aws_client(self, client_type: str, config: dict[str, Any] | None = None) -> Any:
        """A client on the task's connection; ``config``: botocore ``Config`` arguments laid over the
        connection's own (its extra's ``config_kwargs``: proxies, addressing style, ...)."""
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from botocore.config import Config

        hook = AwsBaseHook(
            aws_conn_id=self.aws_conn_id, region_name=self.region_name, client_type=client_type
        )
        if not config:
            return hook.conn
        return hook.get_client_type(region_name=self.region_name, config=hook.config.merge(Config(**config)))

    @property
    def owner_kwargs(self) -> dict[str, str]:
        owner = rendered_text(self.expected_bucket_owner)
        return {"ExpectedBucketOwner": owner} if owner else {}


class PrepareBatchOperator(_PipelineOperator):
    """Read the run's rows, check them, plan jobs within the quotas, and stage the JSONL in S3."""

    template_fields: Sequence[str] = (
        "role_arn",
        "input_bucket",
        "output_bucket",
        "kms_key_id",
        "expected_bucket_owner",
        "region_name",
    )

    def __init__(
        self,
        *,
        role_arn: str,
        input_bucket: str,
        output_bucket: str,
        kms_key_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.role_arn = role_arn
        self.input_bucket = input_bucket
        self.output_bucket = output_bucket
        self.kms_key_id = kms_key_id

    def execute(self, context: Context) -> list[dict[str, Any]]:
        """Push the whole plan under the ``plan`` key; return only the jobs, which the job group maps over.

        A mistake in the trigger form or the pipeline's settings fails the task at once, naming the
        setting, instead of retrying what a retry cannot mend.
        """
        try:
            plan = self._prepare(context)
        except (ConfigError, EarlierTryError) as err:  # EarlierTryError: a retry finds the same jobs
            raise AirflowFailException(str(err)) from err
        context["ti"].xcom_push(key=PLAN_KEY, value=plan)
        return plan["jobs"]

    def _prepare(self, context: Context) -> dict[str, Any]:
        from bedrock_batch.prepare import RunContext, RunPreparer, RuntimeSettings, resolve_quotas
        from bedrock_batch.windows import window_for_run

        params = context["params"]
        settings = RuntimeSettings(
            role_arn=rendered_text(self.role_arn) or "",
            input_bucket=rendered_text(self.input_bucket) or "",
            output_bucket=rendered_text(self.output_bucket) or "",
            kms_key_id=rendered_text(self.kms_key_id),
            expected_bucket_owner=rendered_text(self.expected_bucket_owner),
            model_id=params.get("model_id") or None,
            record_limit=params.get("record_limit") or None,
            re_summarize=bool(params.get("re_summarize")),
            dry_run=bool(params.get("dry_run")),
        )
        settings.check(self.pipeline)
        dag_run = context["dag_run"]
        window = window_for_run(
            tz_name=self.config.timezone,
            data_interval_start=context.get("data_interval_start"),
            data_interval_end=context.get("data_interval_end"),
            run_after=getattr(dag_run, "run_after", None),
            window_start=params.get("window_start"),
            window_end=params.get("window_end"),
            run_type=getattr(dag_run, "run_type", None),
        )
        model_id = settings.model_id or self.config.model.id
        quotas_client = self.aws_client("service-quotas") if self.config.jobs.read_live_quotas else None
        preparer = RunPreparer(
            config=self.config,
            settings=settings,
            window=window,
            run=RunContext(dag_id=self.dag_id, run_id=context["run_id"]),
            warehouse=self.warehouse,
            s3=self.aws_client("s3"),
            quotas=resolve_quotas(self.config, model_id, quotas_client),
            run_is_live=run_liveness(context["ti"], self.dag_id, self._active_jobs),
            earlier_jobs=lambda: self._jobs_of_run(context["run_id"]),
            job_tags=self._job_tags,
        )
        return preparer.prepare()

    def _active_jobs(self, run_id: str) -> list[str]:
        """The Bedrock jobs of run ``run_id`` of this DAG that have not ended."""
        return [job["jobName"] for job in self._jobs_of_run(run_id) if job.get("status") in ACTIVE_STATUSES]

    def _job_tags(self, job_arn: str) -> Any:
        from bedrock_batch.hooks import BedrockBatchHook

        return BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name).get_job_tags(
            job_arn
        )

    def _jobs_of_run(self, run_id: str) -> list[dict[str, Any]]:
        """The Bedrock jobs of run ``run_id`` of this DAG in this deployment, whatever their status.

        Only jobs reading input below this pipeline's input folder: another deployment sharing the
        AWS account has runs of the same ids, whose jobs are not this run's earlier tries.
        """
        from bedrock_batch.hooks import BedrockBatchHook
        from bedrock_batch.prepare import run_job_marker
        from bedrock_batch.s3paths import pipeline_input_root, staged_under

        hook = BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        staging = self.config.staging
        root = pipeline_input_root(
            rendered_text(self.input_bucket) or "", staging.input_prefix, self.config.name
        )
        ours, elsewhere = [], []
        for job in hook.jobs_named(run_job_marker(self.dag_id, run_id)):
            (ours if staged_under(job, root) else elsewhere).append(job)
        for job in elsewhere:
            if job.get("status") in ACTIVE_STATUSES:
                log.warning(
                    "Job %s (%s) is named after run %s but reads input outside %s: taken for another "
                    "deployment's. If the input bucket or prefix changed while it ran, it is this run's: "
                    "stop it or let it end before clearing the run again",
                    job.get("jobArn"),
                    job.get("status"),
                    run_id,
                    root,
                )
        return ours


STOPPING_RECHECK_SECONDS = 60
STOPPING_MAX_WAIT_SECONDS = 6 * 3600
"""How long collect waits, rescheduled, for a Stopping job to stop before it fails naming the job."""


class CollectResultsOperator(_PipelineOperator):
    """Load one job's results and queue whatever it did not process; runs whatever happened upstream."""

    template_fields: Sequence[str] = ("job", "expected_bucket_owner", "region_name")

    def __init__(self, *, job: dict[str, Any], **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.job = job

    def _job_info(self, context: Context, job: StagedJob) -> dict[str, Any] | None:
        """The Bedrock job of this planned job: from submit's XCom, else found by its exact name."""
        from bedrock_batch.hooks import ACTIVE_STATUSES, BedrockBatchHook
        from bedrock_batch.operators import bedrock_job_name, staged_job_token

        hook = BedrockBatchHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        token = staged_job_token(dag_id=self.dag_id, run_id=context["run_id"], job=job)
        job_name = bedrock_job_name(job.job_name, token)
        ti = context["ti"]
        submitted = ti.xcom_pull(task_ids=SUBMIT_TASK, map_indexes=ti.map_index, default=None) or {}
        job_arn = submitted.get("job_arn") if submitted.get("job_name") == job_name else None
        if not job_arn:
            found = hook.find_job(job_name=job_name, client_request_token=token)
            job_arn = found.get("jobArn") if found else None
        if not job_arn:
            from bedrock_batch.s3paths import run_input_root, staged_under

            run_root = run_input_root(job.input_s3_uri)  # this run's input, in this deployment
            earlier = [
                str(found["jobName"])
                for found in hook.jobs_named(f"{job.job_name}-")
                if found.get("status") in ACTIVE_STATUSES
                and found.get("jobName") != job_name
                and staged_under(found, run_root)
            ]
            if earlier:  # queued now, its records would be submitted again while these still run
                raise AirflowException(
                    f"Planned job {job.job_name} was not submitted, but {', '.join(earlier)} of an earlier "
                    "try of this run still run on its records; they stay staged until those jobs end. "
                    "Stop them (bedrock_batch_ops action=stop) or let them end, then clear this run from "
                    "its prepare task on."
                )
            log.warning("Job %s was never submitted: its records are queued for the next run", job_name)
            return None
        info = hook.get_job(job_arn)
        if info["status"] == "Stopping":
            self._wait_until_stopped(context, job_arn)
        if info["status"] in ACTIVE_STATUSES:
            raise AirflowException(
                f"Job {job_arn} is still {info['status']}: its output cannot be collected yet. Clear the "
                "wait task to keep waiting (unless it gave up at the job's deadline: then the job is "
                "overdue), or stop the job (bedrock_batch_ops action=stop); then clear this task. Its "
                "records stay staged until then."
            )
        return info

    def _wait_until_stopped(self, context: Context, job_arn: str) -> None:
        """Reschedule the task (its slot free) while the job is Stopping, for at most a while.

        Marking a deferred wait failed stops its job, and collect runs at once: Bedrock may take
        longer to stop the job than the task's retries last. Past the limit this returns, and the
        caller fails the task naming the job.
        """
        from airflow.sdk.exceptions import AirflowRescheduleException

        waited = int(context.get("task_reschedule_count") or 0) * STOPPING_RECHECK_SECONDS
        if waited >= STOPPING_MAX_WAIT_SECONDS:
            return
        log.info(
            "Job %s is Stopping: its output is collected once it has stopped (looking again in %d s)",
            job_arn,
            STOPPING_RECHECK_SECONDS,
        )
        raise AirflowRescheduleException(
            dt.datetime.now(dt.UTC) + dt.timedelta(seconds=STOPPING_RECHECK_SECONDS)
        )

    def execute(self, context: Context) -> dict[str, Any]:
        from bedrock_batch.collect import collect_job
        from bedrock_batch.models import family_of_job
        from bedrock_batch.staging import StagedJob

        job = StagedJob.from_dict(self.job)
        plan = context["ti"].xcom_pull(task_ids=PREPARE_TASK, key=PLAN_KEY)
        job_info = self._job_info(context, job)
        outcome = collect_job(
            s3=self.aws_client("s3"),
            warehouse=self.warehouse,
            job=job,
            job_info=job_info,
            family=family_of_job(
                job_info, model_id=plan["model_id"], invocation_type=self._planned_invocation_type(plan)
            ),
            run_id=context["run_id"],
            prompt_version=plan["prompt_version"],
            model_id=plan["model_id"],
            max_attempts=self.config.max_attempts,
            owner=self.owner_kwargs,
        )
        return outcome.to_dict()


class OnDemandOperator(_PipelineOperator):
    """Summarize a small batch through bedrock-runtime; skipped when prepare planned none."""

    template_fields: Sequence[str] = ("expected_bucket_owner", "region_name")

    def execute(self, context: Context) -> dict[str, Any] | None:
        from airflow.sdk.exceptions import AirflowSkipException

        from bedrock_batch.models import family_for
        from bedrock_batch.on_demand import (
            RUNTIME_CLIENT_CONFIG,
            on_demand_task_outcome,
            read_records,
            read_since,
            summarize_small_batch,
        )

        plan = context["ti"].xcom_pull(task_ids=PREPARE_TASK, key=PLAN_KEY)
        small = plan.get("on_demand") if plan else None
        if not small or plan.get("dry_run"):
            raise AirflowSkipException("No small batch to run on demand in this run")
        records = list(read_records(self.aws_client("s3"), small["records_s3_uri"], self.owner_kwargs))
        invocation_type = self._planned_invocation_type(plan)
        result, counts = summarize_small_batch(
            self.warehouse,
            records,
            runtime=self.aws_client("bedrock-runtime", RUNTIME_CLIENT_CONFIG),
            family=family_for(plan["model_id"], invocation_type),
            # A plan from before the setting has none: its batch model is the one it calls.
            model_id=plan.get("on_demand_model_id") or plan["model_id"],
            invocation_type=invocation_type,
            concurrency=self.config.small_batch.on_demand_concurrency,
            run_id=context["run_id"],
            prompt_version=plan["prompt_version"],
            max_attempts=self.config.max_attempts,
            read_since=read_since(small),
        )
        # A refusal still ends this task well: every record is loaded or queued, and the report then
        # fails the run naming it.
        return on_demand_task_outcome(len(records), result, counts)


def _is_scheduled(context: Context) -> bool:
    """Whether this is a nightly run: a backfill's or a manual run's earlier days may simply not have
    run yet, so only a scheduled run looks back for rows no run has read."""
    from bedrock_batch.windows import run_type_name

    return run_type_name(getattr(context.get("dag_run"), "run_type", None)) == "scheduled"


class ReportOperator(_PipelineOperator):
    """Log and return the run summary; fail the run, after accounting, if any job did not succeed.

    A dry run's report is skipped once it has logged and pushed its summary: it wrote no rows, and a
    report that succeeded would update the output Asset, on which downstream DAGs run.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)

    def _unread_before(self, window_start: str) -> dict[str, Any] | None:
        """Rows no run has read in the ``late_rows_check_days`` before the window (never before the
        pipeline's ``start_date``), logged as a warning that says how to summarize them."""
        from bedrock_batch.prepare import source_spec
        from bedrock_batch.windows import days_before

        days = self.config.late_rows_check_days
        if days == 0:
            return None
        end = dt.datetime.fromisoformat(window_start)
        start = days_before(
            end, days, self.config.timezone, not_before=dt.date.fromisoformat(self.config.start_date)
        )
        if start >= end:
            return None
        try:
            found = self.warehouse.unread_rows(source_spec(self.config), start=start, end=end)
        except Exception as error:  # a look-back that cannot run must not fail the night's run
            log.warning("Could not count the rows no run has read before this run's window: %s", error)
            return {"error": str(error)[:500]}
        if found.rows:
            log.warning(
                "%d rows of %s (from %s to %s, in the %d days before this run's window) were read by no "
                "run: they arrived after their day's run read it, their day had no run, or a "
                "record_limit left them. Backfill "
                "those days with reprocess behavior 'All runs' (completed) to summarize them; only "
                "rows not yet summarized are submitted.",
                found.rows,
                self.config.source.table,
                found.first,
                found.last,
                days,
            )
        return {"rows": found.rows, "first": str(found.first or ""), "last": str(found.last or "")}

    def execute(self, context: Context) -> dict[str, Any]:
        from bedrock_batch.report import format_summary, load_prices, summarize_run

        ti = context["ti"]
        states = task_states_this_try(ti, self.dag_id, context["run_id"])
        plan = plan_of_this_try(ti, states, context["run_id"])
        outcomes = collected_outcomes(ti, len(plan["jobs"]), states)
        on_demand = on_demand_outcome(ti, states)
        summary = summarize_run(plan=plan, outcomes=outcomes, on_demand=on_demand, prices=load_prices())
        small = None if plan.get("dry_run") else plan.get("on_demand")
        on_demand_lost = bool(small) and on_demand is None
        all_loaded = summary["jobs_collected"] >= summary["jobs_planned"] and not on_demand_lost
        if all_loaded and not plan.get("dry_run"):
            # Every job's output is loaded: a later run of these days finds its rows done.
            self.warehouse.release_window(run_id=context["run_id"], prompt_version=plan["prompt_version"])
        if not plan.get("dry_run") and _is_scheduled(context):
            summary["unread_before_window"] = self._unread_before(plan["window"]["start"])
        log.info("Run summary of %s:\n%s", self.pipeline, format_summary(summary))
        failed = {name: status for name, status in summary["job_statuses"].items() if status != "Completed"}
        # Final, as the report runs once every task upstream has finished: a retry reads the same.
        if summary["jobs_collected"] < summary["jobs_planned"]:
            raise AirflowFailException(
                f"{summary['jobs_planned'] - summary['jobs_collected']} of {summary['jobs_planned']} jobs "
                "were not collected: see the batch_job tasks. Their records stay staged for a rerun."
            )
        if on_demand_lost:
            raise AirflowFailException(
                f"{ON_DEMAND_TASK} did not succeed in this try: its {small.get('records')} records were not "
                f"summarized. Clear {ON_DEMAND_TASK} to run them again."
            )
        if summary["on_demand_refused"]:
            raise AirflowFailException(
                f"Bedrock refused the on-demand requests ({summary['on_demand_refusal']}): "
                f"{summary['on_demand_refused']} records were not invoked and are carried over to the next "
                "run without spending an attempt. Fix the access or the model id; the next run takes them."
            )
        not_completed = {"Failed", "Stopped", "Expired", "NotSubmitted"}
        if self.config.jobs.fail_on_partial:
            # The wait task failed on it, but collect and the report run anyway (all_done), and the
            # run's state is the report's: without this the setting would leave the run green.
            not_completed.add("PartiallyCompleted")
        if any(status in not_completed for status in failed.values()):
            # Final: a retry of the report cannot change how the jobs ended.
            raise AirflowFailException(
                f"Jobs did not complete: {failed}. Their unprocessed records are queued for the next run."
            )
        if plan.get("dry_run"):
            from airflow.sdk.exceptions import AirflowSkipException

            ti.xcom_push(key="return_value", value=summary)
            raise AirflowSkipException("Dry run: no rows were written, so the output Asset is not updated")
        return summary
