"""Build the nightly DAG of one pipeline config. DAG files in dags/ stay one call long.

Run shape::

    prepare -> [submit -> wait -> collect] x one mapped group per planned job -> report
           \\-> run_on_demand (small batches, when the policy says so) -----------/

``prepare`` returns the plan (S3 URIs and counts only). Each job group submits, waits on the
triggerer and loads its results; ``collect`` and ``report`` run whatever happened upstream, so every
source row ends summarized, errored or carried over even when a job fails.
"""

from __future__ import annotations

import datetime as dt
import os
from textwrap import dedent
from typing import Any

from bedrock_batch.config import INCLUDE_DIR, PIPELINES_DIR, PipelineConfig

# Local runs (the demo, the tests) shorten the waits through the environment; deployments leave these unset.
POLL_INTERVAL_ENV = "BEDROCK_BATCH_POLL_INTERVAL_SECONDS"
RETRY_DELAY_ENV = "BEDROCK_BATCH_RETRY_DELAY_SECONDS"
# `submit.output["job_arn"]` would name an XCom key; the ARN is a field of submit's return value.
SUBMITTED_JOB_ARN = "{{ ti.xcom_pull(task_ids='batch_job.submit', map_indexes=ti.map_index)['job_arn'] }}"
WAIT_PRIORITY = 100
"""The wait task's weight in the jobs pool: above every submit's (see the wait task)."""
SUBMIT_PRIORITY = 1


def _poll_interval(config: PipelineConfig) -> float:
    """The sensor's shortest poll interval; local runs shorten it through the environment."""
    override = os.environ.get(POLL_INTERVAL_ENV)
    return float(override) if override else float(config.jobs.poll_interval_seconds)


def output_asset_name(config: PipelineConfig) -> str:
    """The Asset the report task updates after a successful run: ``<pipeline>.<output table>``."""
    return f"{config.name}.{config.warehouse.output_table}"


def config_location(config: PipelineConfig) -> str:
    """Where the pipeline's file is read from, as on-call staff should look for it: relative to the
    checkout when it is the shipped folder, else the path BEDROCK_BATCH_PIPELINES_DIR gives."""
    path = PIPELINES_DIR / f"{config.name}.yaml"
    checkout = INCLUDE_DIR.parent
    return str(path.relative_to(checkout)) if path.is_relative_to(checkout) else str(path)


def _doc(config: PipelineConfig) -> str:
    return dedent(
        f"""
        ### {config.name}

        {config.description}

        * **Source**: `{config.source.table}` rows whose `{config.source.timestamp_column}` falls in the
          run's window (one local day in `{config.timezone}`), not yet summarized for the prompt's version,
          plus rows carried over from earlier runs.
        * **Model**: `{config.model.id}` ({config.model.invocation_type}), prompt `{config.prompt}`.
        * **Output**: `{config.warehouse.output_table}`; errors in `{config.warehouse.error_table}`;
          records waiting for a later run in `{config.warehouse.pending_table}`.
        * **Jobs**: planned within the Bedrock batch quotas; at most as many in flight as the
          `{config.jobs.pool}` pool has slots.
        * **Small batches** (under the job minimum): `{config.small_batch.policy}`.

        Trigger with params to override the window, the model, or to re-summarize or dry-run.
        A successful run (not a dry run) updates the Asset `{output_asset_name(config)}` for downstream DAGs.
        Config: `{config_location(config)}`.
        """
    )


def _params(config: PipelineConfig) -> dict[str, Any]:
    from airflow.sdk import Param

    return {
        "window_start": Param(
            None,
            type=["null", "string"],
            title="Window start",
            description="Override the window (ISO date or date-time, pipeline time zone). With window_end.",
        ),
        "window_end": Param(
            None, type=["null", "string"], title="Window end", description="Exclusive end of the window."
        ),
        "model_id": Param(
            None,
            type=["null", "string"],
            title="Model override",
            description=(
                f"Bedrock model id to use instead of {config.model.id} (of the same family under "
                "InvokeModel; any model under Converse), in batch and on demand alike."
            ),
        ),
        "record_limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            title="Record limit",
            description=(
                "Process at most this many source rows. The rest of the window stays unread until a later "
                "run over the same days (a rerun or backfill), not the next scheduled run."
            ),
        ),
        "re_summarize": Param(
            False,
            type="boolean",
            title="Re-summarize",
            description="Also take rows that already have a summary for this prompt version.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            description="Plan and stage the input in S3, but submit nothing and write no rows.",
        ),
    }


def build_pipeline_dag(config: PipelineConfig) -> Any:
    """Return the DAG for ``config``; only cheap objects are created here (this runs at parse time)."""
    import pendulum
    from airflow.sdk import DAG, Asset, CronDataIntervalTimetable, task_group

    from bedrock_batch.alerts import build_notifiers
    from bedrock_batch.operators import BedrockBatchSubmitOperator
    from bedrock_batch.pipeline_operators import (
        CollectResultsOperator,
        OnDemandOperator,
        PrepareBatchOperator,
        ReportOperator,
    )
    from bedrock_batch.sensors import BedrockBatchJobSensor

    # Named, not URI-addressed: a URI with a scheme makes Airflow load every provider's URI handlers
    # (boto3 included) while the DAG file is parsed. Downstream DAGs schedule on this name.
    output_asset = Asset(name=output_asset_name(config))
    default_args = {
        "owner": config.owner,
        "retries": 2,
        "retry_delay": dt.timedelta(seconds=float(os.environ.get(RETRY_DELAY_ENV, 120))),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": dt.timedelta(minutes=30),
    }
    aws = {"aws_conn_id": config.aws.conn_id, "region_name": config.aws.region}
    with DAG(
        dag_id=config.name,
        description=config.description,
        doc_md=_doc(config),
        schedule=CronDataIntervalTimetable(config.schedule, timezone=config.timezone),
        # Midnight in the pipeline's zone: the first interval of the timetable starts on that day.
        start_date=pendulum.parse(config.start_date, tz=config.timezone),
        catchup=config.catchup,
        max_active_runs=config.jobs.max_active_runs,
        default_args=default_args,
        tags=["bedrock-batch", *config.tags],
        params=_params(config),
        render_template_as_native_obj=True,
    ) as dag:
        prepare = PrepareBatchOperator(
            task_id="prepare",
            pipeline=config.name,
            role_arn=config.aws.role_arn,
            input_bucket=config.staging.input_bucket,
            output_bucket=config.staging.output_bucket,
            kms_key_id=config.staging.kms_key_id,
            expected_bucket_owner=config.staging.expected_bucket_owner,
            **aws,
        )

        @task_group(group_id="batch_job")
        def batch_job(job: dict[str, Any]) -> None:
            submit = BedrockBatchSubmitOperator(
                task_id="submit",
                job=job,
                role_arn=config.aws.role_arn,
                model_id="{{ ti.xcom_pull(task_ids='prepare', key='plan')['model_id'] }}",
                # The API the plan's bodies were built for (a plan from before it was recorded: the config's).
                invocation_type="{{ ti.xcom_pull(task_ids='prepare', key='plan').get('invocation_type', '"
                + config.model.invocation_type
                + "') }}",
                tags=config.jobs.tags,
                timeout_hours=config.jobs.timeout_hours,
                kms_key_id=config.staging.kms_key_id,
                bucket_owner=config.staging.expected_bucket_owner,
                pool=config.jobs.pool,
                # Absolute, so it does not gather its downstream tasks' weights and outrank the waits.
                priority_weight=SUBMIT_PRIORITY,
                weight_rule="absolute",
                quota_retry_seconds=config.jobs.quota_retry_minutes * 60,
                quota_max_wait_seconds=config.jobs.quota_max_wait_hours * 3600,
                **aws,
            )
            wait = BedrockBatchJobSensor(
                task_id="wait",
                job_arn=SUBMITTED_JOB_ARN,
                fail_on_partial=config.jobs.fail_on_partial,
                stop_on_kill=config.jobs.stop_on_kill,
                poll_interval=_poll_interval(config),
                max_poll_interval=max(_poll_interval(config), config.jobs.max_poll_interval_seconds),
                pool=config.jobs.pool,
                # A submitted job's wait takes a free slot before another submit does: the slot its
                # submit gave back is the job's. (Should a submit still get in, Bedrock's quota error
                # reschedules it.)
                priority_weight=WAIT_PRIORITY,
                weight_rule="absolute",
                **aws,
            )
            collect = CollectResultsOperator(
                task_id="collect",
                pipeline=config.name,
                job=job,
                expected_bucket_owner=config.staging.expected_bucket_owner,
                **aws,
            )
            submit >> wait >> collect

        jobs = batch_job.expand(job=prepare.output)
        on_demand = OnDemandOperator(
            task_id="run_on_demand",
            pipeline=config.name,
            expected_bucket_owner=config.staging.expected_bucket_owner,
            **aws,
        )
        report = ReportOperator(
            task_id="report",
            pipeline=config.name,
            outlets=[output_asset],
            # One alert per failed run: the report runs last whatever happened before it, and fails
            # whenever the run does (alerts.py).
            on_failure_callback=build_notifiers(config.alerts.on_failure) or None,
        )
        prepare >> [jobs, on_demand]
        [jobs, on_demand] >> report
    return dag
