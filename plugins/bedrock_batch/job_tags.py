"""The tags that tie a Bedrock batch job to the Airflow DAG run that submitted it.

The submit operator puts them on every job; the ops DAG and the batch-jobs page read them back to
find the run (a link in the UI, orphan detection in ``reconcile``). A third names the prompt version
the job's records were built with, so a later load (adopt, or prepare loading an earlier try's job)
files the output under it, not under a prompt changed since. Bedrock tag values allow fewer
characters than Airflow run ids may hold, so a value is escaped reversibly: a character outside
``[a-zA-Z0-9._:/=+-]`` becomes ``@HH`` per UTF-8 byte (``@`` itself included). Default Airflow run
ids (``manual__2026-01-01T00:00:00+00:00``) pass unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RESERVED_TAG_PREFIX = "bedrock-batch:"
"""Tag keys the submit task writes; a pipeline's own tags may not use them."""
DAG_ID_TAG = f"{RESERVED_TAG_PREFIX}dag-id"
RUN_ID_TAG = f"{RESERVED_TAG_PREFIX}run-id"
PROMPT_VERSION_TAG = f"{RESERVED_TAG_PREFIX}prompt-version"
"""The prompt version the job's records were built with: its output is filed under it."""
SUBMIT_TAGS = 3
"""How many tags the submit task adds to a pipeline's own (the DAG, the run, the prompt version)."""
MAX_JOB_TAGS = 200
"""Bedrock's limit on the tags of one job (CreateModelInvocationJob ``tags``)."""

MAX_TAG_VALUE = 256
_PLAIN = re.compile(r"[a-zA-Z0-9._:/=+\-]")
_ESCAPED = re.compile(r"(?:@[0-9A-F]{2})+")


def encode_tag_value(text: str) -> str | None:
    """``text`` as a valid Bedrock tag value, or None when even escaped it is too long."""
    out = []
    for char in text:
        if _PLAIN.fullmatch(char):
            out.append(char)
        else:
            out.extend(f"@{byte:02X}" for byte in char.encode())
    value = "".join(out)
    return value if len(value) <= MAX_TAG_VALUE else None


def decode_tag_value(value: str) -> str:
    """Undo ``encode_tag_value``."""
    return _ESCAPED.sub(lambda match: bytes.fromhex(match.group().replace("@", "")).decode(), value)


def run_tags(*, dag_id: str, run_id: str) -> dict[str, str]:
    """The tags naming the DAG run; empty when an id cannot be stored (the job then has no owner run)."""
    dag_value, run_value = encode_tag_value(dag_id), encode_tag_value(run_id)
    if dag_value is None or run_value is None:
        return {}
    return {DAG_ID_TAG: dag_value, RUN_ID_TAG: run_value}


@dataclass(frozen=True)
class RunRef:
    """The DAG run a job's tags name."""

    dag_id: str
    run_id: str


def run_ref(tags: Mapping[str, str] | Iterable[Mapping[str, str]]) -> RunRef | None:
    """The run named by ``tags`` (a dict, or Bedrock's ``[{"key", "value"}]`` list); None if untagged."""
    if not isinstance(tags, Mapping):
        tags = {item["key"]: item["value"] for item in tags}
    dag_value, run_value = tags.get(DAG_ID_TAG), tags.get(RUN_ID_TAG)
    if not dag_value or not run_value:
        return None
    try:
        return RunRef(dag_id=decode_tag_value(dag_value), run_id=decode_tag_value(run_value))
    except UnicodeDecodeError:  # not escaped by encode_tag_value (someone else's tag): no run of ours
        return None


def prompt_version_tags(prompt_version: str | None) -> dict[str, str]:
    """The tag naming the prompt version a job's records were built with; empty if none fits."""
    value = encode_tag_value(prompt_version) if prompt_version else None
    return {PROMPT_VERSION_TAG: value} if value else {}


def prompt_version_of(tags: Mapping[str, str] | Iterable[Mapping[str, str]]) -> str | None:
    """The prompt version ``tags`` name (a dict, or Bedrock's list); None if they name none."""
    if not isinstance(tags, Mapping):
        tags = {item["key"]: item["value"] for item in tags}
    value = tags.get(PROMPT_VERSION_TAG)
    try:
        return decode_tag_value(value) if value else None
    except UnicodeDecodeError:
        return None
