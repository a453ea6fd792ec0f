"""Least privilege, encryption, bucket ownership, and no transcript text in the logs.

The Airflow role policy (include/iam/airflow-role-policy.json) must grant exactly the IAM actions the
code needs: every AWS operation the library can call (found in its source, checked against the
botocore service models) and every one a real DAG run called (the stand-in's call log), mapped to
IAM action names, and nothing else.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import uuid
from fnmatch import fnmatch
from pathlib import Path
from string import Template
from typing import Any

import pytest

from bedrock_batch.config import load_pipeline
from include.demo_data import generate
from tests.fixtures.pipeline_run import SHIPPED_CONFIG
from tests.reliability.conftest import NOISY_DAY
from tests.reliability.support import ACCOUNT_ID, KMS_KEY_ARN, LibraryRun

REPO = Path(__file__).resolve().parents[2]
IAM_DIR = REPO / "include" / "iam"
CODE_DIRS = (REPO / "plugins" / "bedrock_batch", REPO / "dags")

# API operation (service prefix as the stand-in logs it) -> the IAM actions it needs.
IAM_ACTIONS: dict[str, set[str]] = {
    # Creating a job passes the service role and tags the job on creation.
    "bedrock:CreateModelInvocationJob": {
        "bedrock:CreateModelInvocationJob",
        "bedrock:TagResource",
        "iam:PassRole",
    },
    "bedrock:GetModelInvocationJob": {"bedrock:GetModelInvocationJob"},
    "bedrock:ListModelInvocationJobs": {"bedrock:ListModelInvocationJobs"},
    "bedrock:StopModelInvocationJob": {"bedrock:StopModelInvocationJob"},
    "bedrock:ListTagsForResource": {"bedrock:ListTagsForResource"},
    "bedrock:InvokeModel": {"bedrock:InvokeModel"},
    "bedrock:Converse": {"bedrock:InvokeModel"},
    "servicequotas:ListServiceQuotas": {"servicequotas:ListServiceQuotas"},
    "servicequotas:ListAWSDefaultServiceQuotas": {"servicequotas:ListAWSDefaultServiceQuotas"},
    "s3:PutObject": {"s3:PutObject"},
    "s3:CreateMultipartUpload": {"s3:PutObject"},
    "s3:UploadPart": {"s3:PutObject"},
    "s3:CompleteMultipartUpload": {"s3:PutObject"},
    "s3:AbortMultipartUpload": {"s3:AbortMultipartUpload"},
    "s3:GetObject": {"s3:GetObject"},
    "s3:HeadObject": {"s3:GetObject"},
    "s3:ListObjectsV2": {"s3:ListBucket"},
    "s3:DeleteObjects": {"s3:DeleteObject"},
    "sts:GetCallerIdentity": set(),  # needs no permission
}
# With staging.kms_key_id set, S3 asks KMS on the caller's behalf.
KMS_ACTIONS = {"kms:GenerateDataKey", "kms:Decrypt"}
# Run by whoever deploys a pipeline, with their own credentials, never by Airflow (see include/iam/README.md).
DEPLOY_TIME_MODULES = {"lifecycle.py"}
# Services whose operations the code may call, in the order a shared operation name is attributed.
SERVICES = (
    ("bedrock", "bedrock"),
    ("s3", "s3"),
    ("bedrock-runtime", "bedrock"),
    ("service-quotas", "servicequotas"),
)


def _policy(name: str) -> dict[str, Any]:
    return json.loads((IAM_DIR / name).read_text())


def _granted(policy: dict[str, Any]) -> set[str]:
    actions: set[str] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def _operations_in_code() -> set[str]:
    """Every AWS operation the library's source calls, as ``prefix:Operation``."""
    import botocore.session
    from botocore import xform_name

    source = "\n".join(
        path.read_text()
        for directory in CODE_DIRS
        for path in sorted(directory.rglob("*.py"))
        if path.name not in DEPLOY_TIME_MODULES
    )
    called = set(re.findall(r"\.([a-z][a-z0-9_]*)\(", source))
    session = botocore.session.get_session()
    found: dict[str, str] = {}
    for service, prefix in SERVICES:
        for operation in session.get_service_model(service).operation_names:
            name = xform_name(operation)
            if name in called and name not in found:
                found[name] = f"{prefix}:{operation}"
    return set(found.values())


def _required(operations: set[str]) -> set[str]:
    unknown = operations - set(IAM_ACTIONS)
    assert not unknown, f"map these operations to IAM actions: {sorted(unknown)}"
    return set().union(*(IAM_ACTIONS[operation] for operation in operations))


# -- the Airflow role -------------------------------------------------------------------------
def test_every_action_a_dag_run_called_is_granted(noisy_hardened_run):
    called = {call["action"] for call in noisy_hardened_run.extra["calls"]}
    assert "bedrock:CreateModelInvocationJob" in called
    missing = (_required(called) | KMS_ACTIONS) - _granted(_policy("airflow-role-policy.json"))
    assert not missing


def test_the_dag_run_called_nothing_the_code_scan_missed(noisy_hardened_run):
    called = {call["action"] for call in noisy_hardened_run.extra["calls"]} - {"sts:GetCallerIdentity"}
    assert called <= _operations_in_code()


def test_the_airflow_role_grants_exactly_what_the_code_calls():
    required = _required(_operations_in_code()) | KMS_ACTIONS
    assert _granted(_policy("airflow-role-policy.json")) == required


def test_the_airflow_role_names_its_resources_and_wildcards_only_list_calls():
    for statement in _policy("airflow-role-policy.json")["Statement"]:
        actions = statement["Action"]
        assert all("*" not in action for action in actions)
        if statement["Resource"] == "*":
            assert all(action.split(":")[1].startswith("List") for action in actions), statement["Sid"]
    text = (IAM_DIR / "airflow-role-policy.json").read_text()
    assert re.search(r"\d{12}", text) is None  # accounts, buckets, keys are placeholders
    assert {"${InputBucket}", "${OutputBucket}", "${BedrockServiceRoleArn}", "${KmsKeyArn}"} <= set(
        re.findall(r"\$\{\w+\}", text)
    )


def test_the_pass_role_grant_is_limited_to_bedrock():
    (statement,) = [
        s for s in _policy("airflow-role-policy.json")["Statement"] if "iam:PassRole" in s["Action"]
    ]
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "bedrock.amazonaws.com"}}


def test_a_dag_run_touches_only_the_prefixes_the_policies_grant(noisy_hardened_run):
    """Every S3 request of the run (from the stand-in's call log) names a key or lists a prefix
    under what the Airflow role grants, filled in with the shipped config's prefixes."""
    config = load_pipeline(SHIPPED_CONFIG)
    values = {"InputPrefix": config.staging.input_prefix, "OutputPrefix": config.staging.output_prefix}
    granted_keys, granted_lists = [], []
    for statement in _policy("airflow-role-policy.json")["Statement"]:
        resources = statement["Resource"]
        for resource in [resources] if isinstance(resources, str) else resources:
            if resource.startswith("arn:${Partition}:s3:::") and "/" in resource:
                granted_keys.append(Template(resource.split("/", 1)[1]).substitute(values))
        for prefix in statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []):
            granted_lists.append(Template(prefix).substitute(values))
    requests = [call for call in noisy_hardened_run.extra["calls"] if call["service"] == "s3"]
    # The stand-in logs S3 operations by their API names.
    assert {"s3:PutObject", "s3:GetObject", "s3:ListObjectsV2"} <= {call["action"] for call in requests}
    for call in requests:
        _, _, key = call["path"].lstrip("/").partition("/")
        if key:
            assert any(fnmatch(key, pattern) for pattern in granted_keys), call
        elif call["action"] in ("s3:ListObjectsV2", "s3:ListObjects"):
            assert any(fnmatch(call["prefix"] or "", pattern) for pattern in granted_lists), call


# -- the Bedrock service role -------------------------------------------------------------------
def test_the_service_role_reads_input_writes_output_and_nothing_else():
    statements = {s["Sid"]: s for s in _policy("bedrock-service-role-policy.json")["Statement"]}
    by_action: dict[str, list[str]] = {}
    for statement in statements.values():
        for action in statement["Action"]:
            resources = statement["Resource"]
            by_action.setdefault(action, []).extend([resources] if isinstance(resources, str) else resources)
    assert set(by_action) == {"s3:GetObject", "s3:ListBucket", "s3:PutObject", *KMS_ACTIONS}
    assert by_action["s3:GetObject"] == ["arn:${Partition}:s3:::${InputBucket}/${InputPrefix}/*/jobs/*"]
    assert by_action["s3:PutObject"] == ["arn:${Partition}:s3:::${OutputBucket}/${OutputPrefix}/*"]
    assert by_action["kms:Decrypt"] == ["${KmsKeyArn}"]


def test_only_bedrock_jobs_of_the_account_may_assume_the_service_role():
    (statement,) = _policy("bedrock-service-role-trust-policy.json")["Statement"]
    assert statement["Principal"] == {"Service": "bedrock.amazonaws.com"}
    assert statement["Action"] == "sts:AssumeRole"
    assert statement["Condition"]["StringEquals"] == {"aws:SourceAccount": "${AccountId}"}
    assert statement["Condition"]["ArnLike"]["aws:SourceArn"].endswith(":model-invocation-job/*")


# -- SSE-KMS and the expected bucket owner --------------------------------------------------------
def test_a_dag_run_with_a_kms_key_encrypts_the_staged_input(noisy_hardened_run, local_aws):
    s3 = local_aws.client("s3")
    (job,) = noisy_hardened_run.extra["jobs"]
    bucket, _, prefix = job["input_data_config"]["s3InputDataConfig"]["s3Uri"][5:].partition("/")
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"]]
    assert keys
    for key in keys:
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == "aws:kms"
        assert head["SSEKMSKeyId"] == KMS_KEY_ARN


def test_a_dag_run_hands_the_kms_key_and_bucket_owner_to_bedrock(noisy_hardened_run):
    (job,) = noisy_hardened_run.extra["jobs"]
    assert job["output_data_config"]["s3OutputDataConfig"]["s3EncryptionKeyId"] == KMS_KEY_ARN
    assert job["output_data_config"]["s3OutputDataConfig"]["s3BucketOwner"] == ACCOUNT_ID
    assert job["input_data_config"]["s3InputDataConfig"]["s3BucketOwner"] == ACCOUNT_ID


def test_every_s3_request_names_the_expected_owner_and_every_write_the_kms_key(
    aws_env, local_aws_clean, sqlite_warehouse
):
    # The stand-in does not enforce either header, so the client's own requests are inspected.
    run = LibraryRun(
        local_aws_clean,
        sqlite_warehouse,
        dt.date(2026, 10, 22),
        run_id=f"scheduled__{uuid.uuid4().hex[:10]}",
        kms_key_id=KMS_KEY_ARN,
        bucket_owner=ACCOUNT_ID,
    )
    plan = run.prepare()
    job = plan["jobs"][0]
    run.collect(job, run.wait(run.submit(job)["job_arn"]))
    operations = {operation for operation, _ in run.s3_requests}
    assert {"PutObject", "ListObjectsV2", "GetObject", "HeadObject"} <= operations
    for operation, raw in run.s3_requests:
        headers = {name.lower(): _text(value) for name, value in raw.items()}
        assert headers.get("x-amz-expected-bucket-owner") == ACCOUNT_ID, operation
        if operation in ("PutObject", "CreateMultipartUpload"):
            assert headers.get("x-amz-server-side-encryption") == "aws:kms", operation
            assert headers.get("x-amz-server-side-encryption-aws-kms-key-id") == KMS_KEY_ARN, operation


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# -- transcript text never reaches a log ----------------------------------------------------------
def _distinctive_texts(run) -> list[str]:
    """Slices of the day's transcripts and of the summaries, long enough to be unmistakable."""
    texts = [row["transcript"] for row in generate(NOISY_DAY, run.seeded, 7) if row["transcript"]]
    texts += [summary for (summary,) in run.query("SELECT summary FROM call_summaries")]
    slices = []
    for text in texts:
        stripped = text.removeprefix("Summary: ").strip()
        if len(stripped) >= 60:
            middle = len(stripped) // 2
            slices.append(stripped[middle : middle + 40])
    return slices


def _task_logs() -> str:
    logs = Path(os.environ["AIRFLOW_HOME"]) / "logs"
    return "\n".join(path.read_text(errors="replace") for path in sorted(logs.rglob("*")) if path.is_file())


def test_no_transcript_or_summary_text_appears_in_the_run_output_or_task_logs(noisy_hardened_run):
    slices = _distinctive_texts(noisy_hardened_run)
    assert len(slices) > 200
    logs = noisy_hardened_run.output + _task_logs()
    assert "Collected job" in logs  # the logs were captured at all
    leaked = [piece for piece in slices if piece in logs]
    assert leaked == []


@pytest.mark.parametrize("name", sorted(p.name for p in IAM_DIR.glob("*.json")))
def test_the_policies_are_valid_json_with_a_version(name):
    assert _policy(name)["Version"] == "2012-10-17"
