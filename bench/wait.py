"""Scenario 3, waiting: worker-slot time and API calls while a batch job runs, in compressed time.

A real 2-hour job cannot run here, so time is compressed ``scale`` times, and everything that
depends on it is scaled alike: the stand-in runs at a speed that makes its job last
``job_hours * 3600 / scale`` wall seconds, and every poll/poke interval is divided by ``scale``.
The code that waits is the real code, making real calls to the stand-in:

- project: ``BedrockBatchJobSensor.execute`` (defers), then ``BedrockBatchJobTrigger.run`` on
  asyncio as the triggerer would run it, then ``execute_complete``. The worker slot is held only
  during ``execute`` and ``execute_complete`` (their real durations, not scaled).
- baseline: the provider's ``BedrockBatchInferenceSensor`` in poke mode (its default 120 s poke
  interval, success_state=completed), which holds a worker slot for the whole wait.

What is simulated: the job's duration (stand-in speed) and the clock (intervals / scale). What
is not: the calls each waiter makes and when it notices the job ended, both read from the stand-in.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.request
from typing import Any

from bench.common import BUCKET, s3_client

JOB_RECORDS = 100
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchInference"
PROVIDER_POKE_INTERVAL_S = 120.0


def stand_in_speed(job_hours: float, scale: float) -> float:
    """The ``--speed`` that makes a JOB_RECORDS-record job last ``job_hours * 3600 / scale`` s."""
    from local_aws.jobs import PER_RECORD_S, SCHEDULED_S, SUBMITTED_S, VALIDATING_S

    simulated_at_speed_1 = SUBMITTED_S + VALIDATING_S + SCHEDULED_S + JOB_RECORDS * PER_RECORD_S
    return simulated_at_speed_1 / (job_hours * 3600 / scale)


def _admin(method: str, path: str) -> Any:
    request = urllib.request.Request(f"{os.environ['BENCH_AWS_ENDPOINT']}/_local/{path}", method=method)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"null")


def _get_calls() -> tuple[int, float]:
    """GetModelInvocationJob calls since the log was cleared, and the wall gap between the last two."""
    calls = _admin("GET", "calls")["calls"]
    times = sorted(float(c["time"]) for c in calls if c.get("action") == "bedrock:GetModelInvocationJob")
    return len(times), (times[-1] - times[-2]) if len(times) > 1 else 0.0


def _bedrock() -> Any:
    import boto3

    return boto3.client(
        "bedrock",
        endpoint_url=os.environ["BENCH_AWS_ENDPOINT"],
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _submit(bedrock: Any, name: str) -> str:
    from bench.baselines import naive_model_input

    lines = [
        json.dumps(
            {
                "recordId": f"R{i:011d}",
                "modelInput": naive_model_input(None, "{{ transcript }}", f"Call {i}.", {"max_tokens": 50}),
            }
        )
        for i in range(JOB_RECORDS)
    ]
    key = f"wait/{name}/input.jsonl"
    s3_client().put_object(Bucket=BUCKET, Key=key, Body="\n".join(lines).encode())
    response = bedrock.create_model_invocation_job(
        jobName=name,
        roleArn=ROLE_ARN,
        modelId="anthropic.claude-3-5-haiku-20241022-v1:0",
        inputDataConfig={"s3InputDataConfig": {"s3Uri": f"s3://{BUCKET}/{key}"}},
        outputDataConfig={"s3OutputDataConfig": {"s3Uri": f"s3://{BUCKET}/wait/{name}/out/"}},
    )
    return response["jobArn"]


def _ended(bedrock: Any, arn: str) -> tuple[float, float]:
    job = bedrock.get_model_invocation_job(jobIdentifier=arn)
    return job["submitTime"].timestamp(), job["endTime"].timestamp()


async def _first_event(trigger: Any) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise RuntimeError("the trigger ended without an event")


def project(*, scale: float, poll_interval: float, max_poll_interval: float) -> dict[str, Any]:
    """Our deferrable sensor: slot time of execute/execute_complete, trigger calls, detection latency."""
    from airflow.sdk.exceptions import TaskDeferred

    from bedrock_batch.sensors import BedrockBatchJobSensor
    from bedrock_batch.triggers import BedrockBatchJobTrigger

    bedrock = _bedrock()
    arn = _submit(bedrock, "bench-wait-project")
    _admin("DELETE", "calls")
    sensor = BedrockBatchJobSensor(
        task_id="wait", job_arn=arn, poll_interval=poll_interval, max_poll_interval=max_poll_interval
    )
    started = time.perf_counter()
    try:
        sensor.execute({})  # type: ignore[arg-type]
    except TaskDeferred as deferred:
        kwargs = deferred.trigger.serialize()[1]
    else:
        raise RuntimeError("the job ended before the sensor deferred; lower the scale")
    execute_s = time.perf_counter() - started
    kwargs.update(poll_interval=poll_interval / scale, max_poll_interval=max_poll_interval / scale)
    event = asyncio.run(_first_event(BedrockBatchJobTrigger(**kwargs)))
    noticed = time.time()
    started = time.perf_counter()
    sensor.execute_complete({}, event)  # type: ignore[arg-type]
    complete_s = time.perf_counter() - started
    calls, last_gap = _get_calls()
    submitted, ended = _ended(bedrock, arn)
    return {
        "slot_seconds": execute_s + complete_s,
        "calls": calls,
        "job_seconds": (ended - submitted) * scale,
        "latency_seconds": max(0.0, noticed - ended) * scale,
        "interval_at_end": last_gap * scale,
        "poll_interval": poll_interval,
        "status": event.get("job_status"),
    }


def baseline(*, scale: float) -> dict[str, Any]:
    """The provider's BedrockBatchInferenceSensor in poke mode: the slot is held the whole wait."""
    from airflow.providers.amazon.aws.sensors.bedrock import BedrockBatchInferenceSensor

    bedrock = _bedrock()
    arn = _submit(bedrock, "bench-wait-poke")
    _admin("DELETE", "calls")
    sensor = BedrockBatchInferenceSensor(
        task_id="poke",
        job_arn=arn,
        success_state=BedrockBatchInferenceSensor.SuccessState.COMPLETED,
        poke_interval=PROVIDER_POKE_INTERVAL_S / scale,  # type: ignore[arg-type]
        mode="poke",
        deferrable=False,
        aws_conn_id="aws_default",
    )
    started = time.perf_counter()
    sensor.execute({})  # type: ignore[arg-type]
    held = time.perf_counter() - started
    noticed = time.time()
    calls, last_gap = _get_calls()
    submitted, ended = _ended(bedrock, arn)
    return {
        "slot_seconds": held * scale,
        "calls": calls,
        "job_seconds": (ended - submitted) * scale,
        "latency_seconds": max(0.0, noticed - ended) * scale,
        "interval_at_end": last_gap * scale,
        "poll_interval": PROVIDER_POKE_INTERVAL_S,
        "status": "Completed",
    }
