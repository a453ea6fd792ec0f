"""
Failure alerts: the Airflow notifiers a pipeline's config names (``alerts.on_failure``).

They are the report task's ``on_failure_callback``: the report runs last whatever happened before
it (``all_done``) and fails whenever the run does (prepare failed, a job was not collected or did
not complete, or ended PartiallyCompleted under ``jobs.fail_on_partial``, an on-demand batch was
refused or lost), so a failed run sends one alert, after the
report's own retries, on the worker that ran it. A callback on every task would send one per failed
task and retry-exhausted mapped job; the DAG's own callback runs on the DAG processor, and in
Airflow 3.1 it is reported not to fire under some executors.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bedrock_batch.errors import ConfigError

if TYPE_CHECKING:
    from airflow.sdk import BaseNotifier

    from bedrock_batch.config import NotifierConfig


def _notifier_class(path: str, where: str) -> type[BaseNotifier]:
    from airflow.sdk import BaseNotifier

    module, _, name = path.rpartition(".")
    try:
        found: Any = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"{where}.notifier: cannot import {path!r} ({exc})") from None
    if not (isinstance(found, type) and issubclass(found, BaseNotifier)):
        raise ConfigError(f"{where}.notifier: {path!r} is not an Airflow notifier (a BaseNotifier subclass)")
    return found


def build_notifiers(specs: Sequence[NotifierConfig]) -> list[BaseNotifier]:
    """The notifiers ``specs`` name, made with their kwargs; a ConfigError names the entry that fails.

    Made when the DAG file is parsed (a notifier's constructor only stores its settings; Jinja in
    them is rendered when it fires)."""
    notifiers = []
    for index, spec in enumerate(specs):
        where = f"alerts.on_failure[{index}]"
        cls = _notifier_class(spec.notifier, where)
        try:
            notifiers.append(cls(**spec.kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}.kwargs: {spec.notifier} refused them ({exc})") from None
    return notifiers
