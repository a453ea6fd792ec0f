"""S3 lifecycle rules that expire a pipeline's staged input and Bedrock's raw output.

Staged JSONL and ``*.jsonl.out`` files hold transcript text; once a run is loaded they are only
needed for a rerun of that run, which restages from the warehouse anyway. Expiring them by a
lifecycle rule (rather than deleting in a task) keeps the DAG free of destructive S3 calls and the
Airflow role free of lifecycle permissions: whoever deploys a pipeline applies the rules once, e.g.::

    from bedrock_batch.config import load_pipeline
    from bedrock_batch.lifecycle import apply_lifecycle_rules, lifecycle_rules

    config = load_pipeline("include/pipelines/summarize_calls.yaml")
    apply_lifecycle_rules(boto3.client("s3"), "my-input-bucket", lifecycle_rules(config)["input"])
    apply_lifecycle_rules(boto3.client("s3"), "my-output-bucket", lifecycle_rules(config)["output"])

``include/s3-lifecycle.json`` shows the rules of the shipped config with the default ages.
"""

from __future__ import annotations

import hashlib
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bedrock_batch.config import PipelineConfig

RULE_ID_PREFIX = "bedrock-batch-"
DEFAULT_INPUT_DAYS = 14
"""The input age when the pipeline's jobs need no longer (:func:`min_input_days`)."""
DEFAULT_OUTPUT_DAYS = 14
"""Collect reads the output right after the job ends; two weeks leaves room to rerun a failed load."""
ABORT_MULTIPART_DAYS = 1


def _rule(name: str, prefix: str, days: int) -> dict[str, Any]:
    """A rule for the folder ``prefix``; its ID ends in 8 hex characters of the folder, so deployments
    sharing a bucket with the same pipeline under other prefixes keep rules of their own."""
    folder = f"{prefix.strip('/')}/"
    return {
        "ID": f"{RULE_ID_PREFIX}{name}-{hashlib.blake2b(folder.encode(), digest_size=4).hexdigest()}",
        "Filter": {"Prefix": folder},
        "Status": "Enabled",
        "Expiration": {"Days": days},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
    }


MIN_INPUT_DAYS = 8
"""Never less: a submit may also wait in the jobs pool (behind a backfill); no setting bounds that
wait, so this only leaves room for a usual one. Adopting a job, or clearing a run, later than the
input age finds its record map gone."""


def min_input_days(config: PipelineConfig) -> int:
    """Days a run's staged input (and record maps, which collect reads) must outlive its staging: a
    submit may wait ``jobs.quota_max_wait_hours`` for quota, the job may run ``jobs.timeout_hours``,
    and collect needs a day after that; and never less than :data:`MIN_INPUT_DAYS`."""
    jobs = config.jobs
    return max(MIN_INPUT_DAYS, math.ceil((jobs.quota_max_wait_hours + jobs.timeout_hours + 24) / 24))


def lifecycle_rules(
    config: PipelineConfig, *, input_days: int | None = None, output_days: int = DEFAULT_OUTPUT_DAYS
) -> dict[str, list[dict[str, Any]]]:
    """The rules for the pipeline's input bucket and its output bucket (one rule each).

    ``input_days`` defaults to :data:`DEFAULT_INPUT_DAYS`, or longer when the pipeline's jobs may
    need their input longer (:func:`min_input_days`); a shorter one is refused, naming the settings.
    """
    floor = min_input_days(config)
    if input_days is None:
        input_days = max(DEFAULT_INPUT_DAYS, floor)
    if input_days < floor:
        raise ValueError(
            f"input_days {input_days} is shorter than pipeline {config.name}'s jobs may need their input, "
            f"{floor} days: jobs.quota_max_wait_hours ({config.jobs.quota_max_wait_hours}) + "
            f"jobs.timeout_hours ({config.jobs.timeout_hours}) + a day to collect, and at least "
            f"{MIN_INPUT_DAYS} (a submit may also wait in the jobs pool)"
        )
    if output_days < 1:
        raise ValueError(f"output_days must be at least 1, got {output_days}")
    staging, name = config.staging, config.name
    # Scoped to the pipeline's own folder ({prefix}/{pipeline}/{run_key}/...): pipelines sharing
    # a bucket keep their own ages.
    return {
        "input": [_rule(f"{name}-input", f"{staging.input_prefix}/{name}", input_days)],
        "output": [_rule(f"{name}-output", f"{staging.output_prefix}/{name}", output_days)],
    }


def apply_lifecycle_rules(s3: Any, bucket: str, rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """
    Put ``rules`` on ``bucket``, replacing rules with the same IDs and keeping every other rule.

    A rule of this project for the same folder under an older ID (before IDs named the folder) is
    replaced too, so its age does not linger next to the new one. PutBucketLifecycleConfiguration
    replaces the whole configuration, so the existing rules are read first. Returns the
    configuration now in force.
    """
    from botocore.exceptions import ClientError

    try:
        existing = s3.get_bucket_lifecycle_configuration(Bucket=bucket).get("Rules", [])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "NoSuchLifecycleConfiguration":
            raise
        existing = []
    ids = {rule["ID"] for rule in rules}
    folders = {rule["Filter"]["Prefix"] for rule in rules}

    def replaced(rule: dict[str, Any]) -> bool:
        if rule.get("ID") in ids:
            return True
        ours = str(rule.get("ID", "")).startswith(RULE_ID_PREFIX)
        return ours and (rule.get("Filter") or {}).get("Prefix") in folders

    merged = [rule for rule in existing if not replaced(rule)] + list(rules)
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": merged})
    return merged
