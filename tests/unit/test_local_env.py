"""The embedded default environment that `make demo` and `make up` share."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_an_airflow_home_inherited_from_the_shell_is_not_where_the_local_stack_writes(tmp_path):
    # Run directly (`python -m scripts.up`), without make's AIRFLOW_HOME, from a shell set up for a
    # real Airflow: the stand-in's connections and metadata DB must stay in the checkout.
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "real-airflow"), "PYTHONPATH": str(REPO)}
    printed = subprocess.run(
        [sys.executable, "-c", "from scripts.local_env import AIRFLOW_HOME; print(AIRFLOW_HOME)"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    assert Path(printed) == REPO / ".airflow"
