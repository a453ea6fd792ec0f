"""Run a measurement in its own subprocess and read its peak RSS (``os.wait4`` rusage)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TIMEOUT_S = 3600.0


class MeasurementError(RuntimeError):
    """The measurement's process failed or ran out of time; the message holds its stderr tail."""


@dataclass(frozen=True)
class Measured:
    result: dict[str, Any]
    peak_rss_mb: float
    wall_seconds: float
    cpu_seconds: float
    """User + system CPU of the measurement's process (steadier than wall time on a busy machine)."""


def median_run(runs: list[Measured]) -> Measured:
    """The run of median rate (records / seconds) among repeats of one measurement, its own peak
    RSS kept (so a size measured once compares like for like), with every run's rate in
    ``result["rates"]``: one slow or fast run does not decide a figure."""

    def rate(m: Measured) -> float:
        seconds = m.result["seconds"]
        return m.result["records"] / seconds if seconds else float("inf")

    middle = sorted(runs, key=rate)[(len(runs) - 1) // 2]
    return replace(middle, result={**middle.result, "rates": [rate(m) for m in runs]})


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "plugins"), str(REPO)])
    env.update(extra or {})
    return env


def measure(
    target: str,
    *,
    env: dict[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    **kwargs: Any,
) -> Measured:
    """Run ``target`` (``module:function``) with ``kwargs`` in a fresh Python; its result and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        out, err = Path(tmp) / "result.json", Path(tmp) / "stderr.txt"
        started = time.monotonic()
        with err.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, "-m", "bench._worker", target, json.dumps(kwargs), str(out)],
                cwd=REPO,
                env=child_env(env),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
            status, rusage = _wait4(process, timeout)
        wall = time.monotonic() - started
        if not os.WIFEXITED(status) or os.WEXITSTATUS(status) != 0 or not out.exists():
            tail = err.read_text(errors="replace")[-3000:]
            raise MeasurementError(f"{target}({kwargs}) failed (status {status}):\n{tail}")
        result = json.loads(out.read_text())
    return Measured(
        result=result,
        peak_rss_mb=rusage.ru_maxrss / 1024,
        wall_seconds=wall,
        cpu_seconds=rusage.ru_utime + rusage.ru_stime,
    )


def _wait4(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = status  # the Popen must not wait for a reaped child again
            return status, rusage
        if time.monotonic() >= deadline:
            process.send_signal(signal.SIGKILL)
            pid, status, rusage = os.wait4(process.pid, 0)
            process.returncode = status
            raise MeasurementError(f"measurement {process.args} exceeded {timeout:.0f} s")
        time.sleep(0.05)
