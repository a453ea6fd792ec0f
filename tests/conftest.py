"""Shared pytest set-up.

Airflow reads AIRFLOW_HOME when it is first imported, so the test session gets its own home (and
metadata DB) here, before anything imports Airflow: tests never touch ~/airflow or the demo's
.airflow/. Every module in tests/fixtures/ is a fixture plugin.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="bedrock-batch-tests-airflow-")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "plugins"), str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
)

pytest_plugins = sorted(
    f"tests.fixtures.{path.stem}"
    for path in (Path(__file__).parent / "fixtures").glob("*.py")
    if path.stem != "__init__"
)
