"""Naive baselines: the code a user writes first, kept here to be measured next to the project.

They are deliberately plain (standard ``json``, whole lists in memory, one request) and do the
same job in outline, minus every check the project makes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

ANTHROPIC_VERSION = "bedrock-2023-05-31"


def naive_model_input(system: str | None, user_template: str, text: str, params: Mapping[str, Any]) -> dict:
    """A Claude Messages body built with ``str.replace`` on the template (no checks at all)."""
    body: dict[str, Any] = {"anthropic_version": ANTHROPIC_VERSION, **params}
    if system:
        body["system"] = system
    user = user_template.replace("{{ transcript }}", text)
    body["messages"] = [{"role": "user", "content": [{"type": "text", "text": user}]}]
    return body


class NaiveStager:
    """json.dumps per record into a list, ``"\\n".join``, one put_object."""

    def __init__(self, system: str | None, user_template: str, params: Mapping[str, Any]) -> None:
        self.system = system
        self.user_template = user_template
        self.params = dict(params)
        self.lines: list[str] = []

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        for row in rows:
            body = naive_model_input(self.system, self.user_template, row["text"], self.params)
            record_id = str(row["source_key"]).replace("-", "")
            self.lines.append(json.dumps({"recordId": record_id, "modelInput": body}))

    def upload(self, s3: Any, bucket: str, key: str) -> int:
        data = "\n".join(self.lines).encode("utf-8")
        s3.put_object(Bucket=bucket, Key=key, Body=data)
        return len(data)


def naive_load(
    s3: Any,
    hook: Any,
    *,
    bucket: str,
    output_keys: Iterable[str],
    map_key: str,
    table: str,
    dialect: str,
    prompt_version: str,
    model_id: str,
    run_id: str,
    job_arn: str,
) -> int:
    """Read each output file whole, json.loads per line, ``DbApiHook.insert_rows`` the summaries."""
    now = datetime.now(UTC).replace(tzinfo=None)
    loaded_at: Any = now.isoformat(sep=" ") if dialect == "sqlite" else now
    mapping = {}
    for line in s3.get_object(Bucket=bucket, Key=map_key)["Body"].read().decode().splitlines():
        for record_id, source_key, _attempt in json.loads(line):  # a block of map entries per line
            mapping[record_id] = source_key
    rows = []
    for key in output_keys:
        for line in s3.get_object(Bucket=bucket, Key=key)["Body"].read().decode().splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            output = record.get("modelOutput")
            if not output:
                continue
            rows.append(
                (
                    mapping[record["recordId"]],
                    prompt_version,
                    model_id,
                    "".join(block["text"] for block in output["content"]),
                    output["usage"]["input_tokens"],
                    output["usage"]["output_tokens"],
                    output["stop_reason"],
                    job_arn,
                    run_id,
                    loaded_at,
                )
            )
    fields = [
        "source_key",
        "prompt_version",
        "model_id",
        "summary",
        "input_tokens",
        "output_tokens",
        "stop_reason",
        "job_arn",
        "run_id",
        "loaded_at",
    ]
    kwargs: dict[str, Any] = {"replace": True}
    if dialect == "postgres":
        kwargs["replace_index"] = ["source_key", "prompt_version"]
    hook.insert_rows(table, rows, target_fields=fields, **kwargs)
    return len(rows)
