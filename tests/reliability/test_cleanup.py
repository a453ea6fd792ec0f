"""Staged input and raw output expire by an S3 lifecycle rule (include/s3-lifecycle.json)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bedrock_batch.config import load_pipeline
from bedrock_batch.lifecycle import apply_lifecycle_rules, lifecycle_rules
from tests.fixtures.pipeline_run import SHIPPED_CONFIG

DOC = Path(__file__).resolve().parents[2] / "include" / "s3-lifecycle.json"


@pytest.fixture
def bucket(local_aws):
    name = f"lifecycle-{uuid.uuid4().hex[:12]}"
    local_aws.client("s3").create_bucket(Bucket=name)
    return name


def test_the_documented_rules_are_the_ones_the_helper_builds():
    rules = lifecycle_rules(load_pipeline(SHIPPED_CONFIG))
    documented = json.loads(DOC.read_text())
    assert documented["input"]["Rules"] == rules["input"]
    assert documented["output"]["Rules"] == rules["output"]


def test_the_rules_cover_exactly_the_pipeline_folders_the_run_writes():
    config = load_pipeline(SHIPPED_CONFIG)
    rules = lifecycle_rules(config)
    (input_rule,) = rules["input"]
    (output_rule,) = rules["output"]
    assert input_rule["Filter"]["Prefix"] == f"{config.staging.input_prefix}/{config.name}/"
    assert output_rule["Filter"]["Prefix"] == f"{config.staging.output_prefix}/{config.name}/"
    assert input_rule["Expiration"]["Days"] > 7  # a job may live 168 h: its input must outlive it
    assert input_rule["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1}


def test_applying_the_rules_on_the_stand_in_keeps_other_rules(local_aws, bucket):
    s3 = local_aws.client("s3")
    other = {"ID": "keep-me", "Filter": {"Prefix": "other/"}, "Status": "Enabled", "Expiration": {"Days": 3}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [other]})
    rules = lifecycle_rules(load_pipeline(SHIPPED_CONFIG))["input"]
    apply_lifecycle_rules(s3, bucket, rules)
    apply_lifecycle_rules(s3, bucket, rules)  # idempotent: replaced, not added twice
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(rule["ID"] for rule in stored) == [rules[0]["ID"], "keep-me"]
    ours = next(rule for rule in stored if rule["ID"] != "keep-me")
    assert ours["Expiration"] == {"Days": 14}
    assert ours["Filter"] == {"Prefix": "bedrock-batch/input/summarize_calls/"}


def test_another_deployments_rules_for_the_same_pipeline_under_another_prefix_are_kept(local_aws, bucket):
    s3 = local_aws.client("s3")
    config = load_pipeline(SHIPPED_CONFIG)
    other = config.model_copy(
        update={"staging": config.staging.model_copy(update={"input_prefix": "staging/bedrock-batch/input"})}
    )
    theirs = lifecycle_rules(other)["input"]
    apply_lifecycle_rules(s3, bucket, theirs)
    ours = lifecycle_rules(config)["input"]
    apply_lifecycle_rules(s3, bucket, ours)
    stored = s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert theirs[0]["ID"] != ours[0]["ID"]
    assert sorted(rule["Filter"]["Prefix"] for rule in stored) == [
        "bedrock-batch/input/summarize_calls/",
        "staging/bedrock-batch/input/summarize_calls/",
    ]


def test_a_rule_of_ours_for_the_same_folder_under_an_older_id_is_replaced(local_aws, bucket):
    s3 = local_aws.client("s3")
    rules = lifecycle_rules(load_pipeline(SHIPPED_CONFIG))["input"]
    older = {**rules[0], "ID": "bedrock-batch-summarize_calls-input", "Expiration": {"Days": 9}}
    s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [older]})
    apply_lifecycle_rules(s3, bucket, rules)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules


def test_a_bucket_without_rules_gets_just_ours(local_aws, bucket):
    s3 = local_aws.client("s3")
    rules = lifecycle_rules(load_pipeline(SHIPPED_CONFIG))["output"]
    apply_lifecycle_rules(s3, bucket, rules)
    assert s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"] == rules


def test_an_input_age_shorter_than_a_job_can_live_is_refused():
    with pytest.raises(ValueError, match="input_days"):
        lifecycle_rules(load_pipeline(SHIPPED_CONFIG), input_days=3)


def test_the_input_age_covers_the_longest_quota_wait_and_timeout_the_config_allows():
    config = load_pipeline(SHIPPED_CONFIG)
    longest = config.model_copy(
        update={"jobs": config.jobs.model_copy(update={"timeout_hours": 168, "quota_max_wait_hours": 168})}
    )
    (rule,) = lifecycle_rules(longest)["input"]
    assert rule["Expiration"]["Days"] == 15  # 7 days queued for quota + 7 running + 1 to collect
    with pytest.raises(ValueError, match=r"jobs.quota_max_wait_hours \(168\) \+ jobs.timeout_hours \(168\)"):
        lifecycle_rules(longest, input_days=14)
    (default,) = lifecycle_rules(config)["input"]
    assert default["Expiration"]["Days"] == 14
