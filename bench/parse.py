"""Scenario 4, DAG parse time: each file of dags/ loaded by a DagBag in a fresh interpreter.

The figure is the DagBag load alone (Airflow itself is imported before the clock starts), the
median of ``runs``. Heavy modules the file pulls in at import time are listed too.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.runner import REPO, child_env

HEAVY = ("boto3", "botocore", "aiobotocore", "pandas", "numpy", "orjson", "psycopg2", "moto", "jinja2")

_PROBE = """
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
before = set(sys.modules)
started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
seconds = time.perf_counter() - started
heavy = sorted({m.split(".")[0] for m in set(sys.modules) - before} & set(sys.argv[2].split(",")))
errors = len(bag.import_errors)
print(json.dumps({"seconds": seconds, "dags": len(bag.dags), "errors": errors, "heavy": heavy}))
"""


def dag_files() -> list[Path]:
    return sorted(p for p in (REPO / "dags").glob("*.py") if not p.name.startswith("_"))


def parse_file(path: Path, *, runs: int = 5, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Median DagBag load time of ``path`` over ``runs`` fresh interpreters."""
    samples = []
    for _ in range(runs):
        done = subprocess.run(
            [sys.executable, "-c", _PROBE, str(path), ",".join(HEAVY)],
            cwd=REPO,
            env=child_env(env),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"parsing {path.name} failed: {done.stderr[-2000:]}")
        samples.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {
        "file": path.name,
        "seconds": statistics.median(s["seconds"] for s in samples),
        "samples": [round(s["seconds"], 4) for s in samples],
        "dags": samples[0]["dags"],
        "import_errors": samples[0]["errors"],
        "heavy_imports": samples[0]["heavy"],
    }
