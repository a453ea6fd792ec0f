"""Shared pytest set-up.

Airflow reads AIRFLOW_HOME when it is first imported, so the test session gets its own home (and
metadata DB) here, before anything imports Airflow: tests never touch ~/airflow or the demo's
.airflow/. Every module in tests/fixtures/ is a fixture plugin.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bedrock-batch-tests-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "plugins"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
)

#: Suites whose tests share one expensive session resource run on one xdist worker each.
SHARED_RESOURCE_GROUPS = {"e2e": "airflow_stack", "reliability": "reliability_run"}

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the marks to group the node ids
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each shared-resource suite on one worker under `pytest -n N --dist loadgroup`."""
    tests_dir = Path(__file__).parent
    for item in items:
        parts = Path(item.path).relative_to(tests_dir).parts
        group = SHARED_RESOURCE_GROUPS.get(parts[0]) if parts else None
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
