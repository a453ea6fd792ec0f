"""Helpers of the Bedrock integration tests: record bodies, bounded waits, running a trigger."""

from __future__ import annotations

import asyncio
import json
import time

from bedrock_batch.hooks import TERMINAL_STATUSES, BedrockBatchHook

MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatch"
BUCKET = "bedrock-batch-it"
RECORDS = 100
WAIT_S = 30.0


def claude_line(index: int) -> bytes:
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": [{"type": "text", "text": f"Summarise call {index}."}]}],
    }
    return json.dumps({"recordId": f"R{index:011d}", "modelInput": body}).encode()


def wait_for_status(hook: BedrockBatchHook, job_arn: str, statuses: frozenset[str] | set[str]) -> dict:
    """Poll until the job is in one of ``statuses`` (bounded by WAIT_S)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        job = hook.get_job(job_arn)
        if job["status"] in statuses:
            return job
        time.sleep(0.05)
    raise AssertionError(f"{job_arn} never reached {sorted(statuses)}: last {job['status']}")


def wait_terminal(hook: BedrockBatchHook, job_arn: str) -> dict:
    return wait_for_status(hook, job_arn, TERMINAL_STATUSES)


def run_trigger(trigger, timeout: float = WAIT_S) -> list:
    """Every event trigger.run() yields, within ``timeout`` seconds."""

    async def collect() -> list:
        return [event async for event in trigger.run()]

    return asyncio.run(asyncio.wait_for(collect(), timeout))
