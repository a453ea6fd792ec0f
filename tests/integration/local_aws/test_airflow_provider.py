"""Peer client: the Amazon provider's own batch operator and sensor, unchanged, against the stand-in."""

from __future__ import annotations

import pytest

from tests.integration.local_aws.helpers import ROLE, create_job, jsonl, records, stage, unique


@pytest.fixture
def staged(local_aws_clean, aws_env):
    s3 = local_aws_clean.client("s3")
    return stage(s3, "provider-bucket", unique("in"), {"part-00001.jsonl": jsonl(records(100))})


def _operator(input_uri, **kwargs):
    from airflow.providers.amazon.aws.operators.bedrock import BedrockBatchInferenceOperator

    return BedrockBatchInferenceOperator(
        task_id=unique("batch"),
        job_name=unique("airflow"),
        role_arn=ROLE,
        model_id="anthropic.claude-3-haiku-20240307-v1:0",
        input_uri=input_uri,
        output_uri="s3://provider-bucket/out/",
        deferrable=False,
        wait_for_completion=True,
        waiter_delay=1,
        waiter_max_attempts=20,
        **kwargs,
    )


def _sensor(job_arn):
    from airflow.providers.amazon.aws.sensors.bedrock import BedrockBatchInferenceSensor

    return BedrockBatchInferenceSensor(
        task_id=unique("sense"), job_arn=job_arn, success_state="completed", mode="poke", poke_interval=0.2
    )


def _poke_until_done(sensor, attempts=100):
    import time

    for _ in range(attempts):
        if sensor.poke({}):
            return True
        time.sleep(0.05)
    return False


def test_the_provider_operator_waits_for_a_completed_job(staged, local_aws_clean):
    job_arn = _operator(staged).execute({})
    job = local_aws_clean.client("bedrock").get_model_invocation_job(jobIdentifier=job_arn)
    assert job["status"] == "Completed"
    assert "bedrock:CreateModelInvocationJob" in local_aws_clean.calls()


def test_the_provider_operator_fails_on_a_failed_job(staged):
    operator = _operator(staged, invoke_kwargs={"tags": [{"key": "local-aws:fault", "value": "fail"}]})
    from botocore.exceptions import WaiterError

    with pytest.raises(WaiterError, match=r'matched expected path: "Failed"'):
        operator.execute({})


def test_the_provider_sensor_succeeds_on_a_completed_job(staged, local_aws_clean):
    job_arn = create_job(local_aws_clean.client("bedrock"), staged, "s3://provider-bucket/out/")
    assert _poke_until_done(_sensor(job_arn))


def test_the_provider_sensor_fails_on_a_failed_job(staged, local_aws_clean):
    job_arn = create_job(
        local_aws_clean.client("bedrock"),
        staged,
        "s3://provider-bucket/out/",
        tags=[{"key": "local-aws:fault", "value": "fail"}],
    )
    from airflow.providers.common.compat.sdk import AirflowException

    with pytest.raises(AirflowException, match="Bedrock batch inference job sensor failed"):
        _poke_until_done(_sensor(job_arn))
