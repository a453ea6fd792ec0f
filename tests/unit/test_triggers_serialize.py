"""Every trigger under plugins/ must come back from its (classpath, kwargs) in a fresh triggerer.

The triggerer loads no DAG bundle and no test code: a trigger is rebuilt from its classpath and
kwargs alone. So each one is serialized here and rebuilt in a separate interpreter that has only
plugins/ on its path.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from airflow.triggers.base import BaseTrigger

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"

SAMPLE_KWARGS: dict[str, dict[str, Any]] = {
    "bedrock_batch.triggers.BedrockBatchJobTrigger": {
        "job_arn": "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456",
        "aws_conn_id": "aws_bedrock",
        "region_name": "eu-west-1",
        "poll_interval": 5,
        "max_poll_interval": 60,
        "backoff": 2.0,
        "jitter": 0.25,
        "deadline": "2026-01-02T03:04:05+00:00",
        "progress_log_interval": 120,
        "stop_on_kill": False,
    },
}
"""Constructor arguments for each trigger; a new trigger without an entry fails the test below."""

REBUILD = """
import importlib, json, sys
classpath, kwargs = json.loads(sys.stdin.read())
module, _, name = classpath.rpartition(".")
trigger = getattr(importlib.import_module(module), name)(**kwargs)
print(json.dumps(trigger.serialize()))
"""


def _modules_defining_triggers() -> list[str]:
    """Modules under plugins/ whose source defines a class deriving from a *Trigger base."""
    names = []
    for path in sorted(PLUGINS.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        if any(
            isinstance(node, ast.ClassDef) and any("Trigger" in ast.unparse(base) for base in node.bases)
            for node in ast.walk(tree)
        ):
            names.append(".".join(path.relative_to(PLUGINS).with_suffix("").parts))
    return names


def _trigger_classes() -> list[type[BaseTrigger]]:
    classes = []
    for module_name in _modules_defining_triggers():
        module = importlib.import_module(module_name)
        classes.extend(
            cls
            for _, cls in inspect.getmembers(module, inspect.isclass)
            if issubclass(cls, BaseTrigger) and cls.__module__ == module_name and not inspect.isabstract(cls)
        )
    return classes


TRIGGERS = _trigger_classes()


def test_plugins_define_at_least_the_bedrock_trigger():
    assert "bedrock_batch.triggers.BedrockBatchJobTrigger" in {
        f"{c.__module__}.{c.__qualname__}" for c in TRIGGERS
    }


@pytest.mark.parametrize("trigger_class", TRIGGERS, ids=lambda cls: cls.__qualname__)
def test_trigger_rebuilds_from_its_serialized_form_in_a_fresh_interpreter(trigger_class, tmp_path):
    classpath = f"{trigger_class.__module__}.{trigger_class.__qualname__}"
    assert classpath in SAMPLE_KWARGS, f"add sample constructor kwargs for {classpath}"
    serialized_path, kwargs = trigger_class(**SAMPLE_KWARGS[classpath]).serialize()
    assert serialized_path == classpath
    completed = subprocess.run(
        [sys.executable, "-P", "-c", REBUILD],
        input=json.dumps([serialized_path, kwargs]),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(PLUGINS), "AIRFLOW_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"},
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rebuilt_path, rebuilt_kwargs = json.loads(completed.stdout.strip().splitlines()[-1])
    assert rebuilt_path == classpath
    assert rebuilt_kwargs == kwargs


@pytest.mark.parametrize("trigger_class", TRIGGERS, ids=lambda cls: cls.__qualname__)
def test_trigger_serializes_every_constructor_argument_with_the_value_given(trigger_class):
    """A rebuilt trigger equal to the serialized one proves nothing if serialize() drops an argument:
    the rebuilt one falls back to its default on both sides. So every argument must be there, as given,
    and the samples must give each one a value other than its default."""
    classpath = f"{trigger_class.__module__}.{trigger_class.__qualname__}"
    sample = SAMPLE_KWARGS[classpath]
    parameters = {
        name: parameter
        for name, parameter in inspect.signature(trigger_class.__init__).parameters.items()
        if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    }
    assert set(sample) == set(parameters), f"the sample for {classpath} must set every argument"
    assert not [name for name, value in sample.items() if value == parameters[name].default], (
        "sample values equal to their defaults"
    )
    _, kwargs = trigger_class(**sample).serialize()
    assert kwargs == sample
