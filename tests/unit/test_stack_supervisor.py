"""The process stack restarts a component that exits, as docker-compose's ``restart: always`` does."""

from __future__ import annotations

import subprocess
import sys
import time

from scripts.up import Supervisor


def start(exit_code: int | None):
    """A stand-in component: a process that exits at once with ``exit_code``, or runs until stopped."""

    def start_component(name: str) -> subprocess.Popen[bytes]:
        code = "import time; time.sleep(60)" if exit_code is None else f"raise SystemExit({exit_code})"
        return subprocess.Popen([sys.executable, "-c", code])

    return start_component


def wait_until(check, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_a_component_that_exits_is_started_again_and_the_restart_is_logged(tmp_path):
    processes = {"scheduler": start(exit_code=1)("scheduler")}
    supervisor = Supervisor(processes, start(exit_code=None), tmp_path, max_restarts=3, interval=0.05)
    first = processes["scheduler"]
    supervisor.start()
    try:
        wait_until(lambda: processes["scheduler"] is not first)
        assert processes["scheduler"].poll() is None  # the new one runs
        assert supervisor.restarts["scheduler"] == 1
        assert "[up] scheduler exited with code 1; restart 1 of 3" in (tmp_path / "scheduler.log").read_text()
    finally:
        supervisor.stop()
        for process in processes.values():
            process.kill()
            process.wait(timeout=10)


def test_a_component_that_keeps_exiting_is_left_down_after_its_restarts(tmp_path):
    processes = {"api-server": start(exit_code=2)("api-server")}
    supervisor = Supervisor(processes, start(exit_code=2), tmp_path, max_restarts=2, interval=0.05)
    supervisor.start()
    try:
        wait_until(lambda: "api-server" in supervisor.given_up)
        assert supervisor.restarts["api-server"] == 2
        assert "not restarted after 2 restarts" in (tmp_path / "api-server.log").read_text()
    finally:
        supervisor.stop()


def test_no_component_is_started_once_the_supervisor_stops(tmp_path):
    processes = {"triggerer": start(exit_code=None)("triggerer")}
    supervisor = Supervisor(processes, start(exit_code=None), tmp_path, max_restarts=3, interval=0.05)
    supervisor.start()
    supervisor.stop()
    running = processes["triggerer"]
    running.kill()
    running.wait(timeout=10)
    time.sleep(0.3)  # several intervals
    assert processes["triggerer"] is running
    assert not supervisor.is_alive()
