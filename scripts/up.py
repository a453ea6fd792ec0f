"""`make up`: the whole stack on this machine, for trying the UI, backfills and the batch-jobs page.

Starts the local AWS stand-in, seeds a few days of demo call transcripts into the SQLite warehouse,
creates the bucket and the jobs pool, then runs what ``airflow standalone`` runs (api-server,
scheduler, dag-processor and triggerer; SQLite metadata DB; LocalExecutor). The components are
started one by one rather than through ``airflow standalone`` so that nothing listens beyond
127.0.0.1 (standalone's scheduler and triggerer serve logs on fixed ports on every interface) and
each writes its own log file. Prints the URL and the login, and stops everything on Ctrl-C.

The end-to-end tests start the same stack through :func:`airflow_stack` (free ports, a temp home).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scripts.local_env import (
    AIRFLOW_HOME,
    LocalAws,
    airflow_env,
    create_bucket,
    local_aws,
    prepare_airflow,
)

DAG_ID = "summarize_calls"
ADMIN_USER = "admin"
DEFAULT_API_PORT = 8080
DEFAULT_AWS_PORT = 4566
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 20.0
MAX_RESTARTS = 5
"""Restarts of one component before the stack gives it up (docker-compose restarts it always)."""
SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"


COMPONENTS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
    "api-server": ("api-server",),  # host and port from AIRFLOW__API__HOST / AIRFLOW__API__PORT
}


@dataclass
class Stack:
    """A running stack: where to reach it, how to log in, and its processes."""

    base_url: str
    username: str
    password: str
    password_file: Path
    airflow_home: Path
    warehouse_path: Path
    aws: LocalAws
    processes: dict[str, subprocess.Popen[bytes]]
    log_dir: Path
    env: dict[str, str]
    supervisor: Supervisor | None = None

    def exited(self) -> dict[str, int]:
        """Components that are no longer running and will not be restarted, with their exit codes."""
        given_up = self.supervisor.given_up if self.supervisor is not None else None
        return {
            name: code
            for name, proc in self.processes.items()
            if (code := proc.poll()) is not None and (given_up is None or name in given_up)
        }


class Supervisor(threading.Thread):
    """Starts a component again when it exits, as docker-compose's ``restart: always`` does.

    Airflow's scheduler on SQLite can die of a database race (an IntegrityError while it creates a
    backfill run's task instances); a stack run as processes then stops scheduling for good, where
    the compose stack would carry on. Each restart is written to the component's log; after
    ``max_restarts`` of one component it is left down (``Stack.exited`` reports it).
    """

    def __init__(
        self,
        processes: dict[str, subprocess.Popen[bytes]],
        start: Callable[[str], subprocess.Popen[bytes]],
        log_dir: Path,
        *,
        max_restarts: int = MAX_RESTARTS,
        interval: float = 1.0,
    ) -> None:
        super().__init__(name="stack-supervisor", daemon=True)
        self.processes = processes
        self.start_component = start
        self.log_dir = log_dir
        self.max_restarts = max_restarts
        self.interval = interval
        self.restarts: Counter[str] = Counter()
        self.given_up: set[str] = set()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.interval):
            for name, process in list(self.processes.items()):
                code = process.poll()
                if code is None or name in self.given_up:
                    continue
                if self.restarts[name] >= self.max_restarts:
                    self._note(
                        name, f"exited with code {code}; not restarted after {self.max_restarts} restarts"
                    )
                    self.given_up.add(name)  # after the note: who sees it given up finds the reason logged
                    continue
                self.restarts[name] += 1
                self._note(
                    name, f"exited with code {code}; restart {self.restarts[name]} of {self.max_restarts}"
                )
                self.processes[name] = self.start_component(name)

    def stop(self) -> None:
        """No more restarts (before the components are stopped)."""
        self._stopping.set()
        if self.is_alive():
            self.join(timeout=30)

    def _note(self, name: str, what: str) -> None:
        with (self.log_dir / f"{name}.log").open("a") as log_file:
            log_file.write(f"{dt.datetime.now(dt.UTC).isoformat()} [up] {name} {what}\n")


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def admin_password(password_file: Path) -> str:
    """The admin password in the simple auth manager's password file, created once and then kept.

    Writing the file before the api-server starts makes the password known to this script (and the
    tests) instead of only to the api-server's log.
    """
    passwords: dict[str, str] = {}
    if password_file.exists():
        with contextlib.suppress(ValueError):
            passwords = json.loads(password_file.read_text() or "{}")
    if not passwords.get(ADMIN_USER):
        passwords[ADMIN_USER] = secrets.token_urlsafe(12)
        password_file.parent.mkdir(parents=True, exist_ok=True)
        password_file.write_text(json.dumps(passwords) + "\n")
        password_file.chmod(0o600)
    return passwords[ADMIN_USER]


def stack_env(
    aws: LocalAws,
    *,
    airflow_home: Path,
    warehouse_path: Path,
    api_port: int,
    poll_seconds: float,
    password_file: Path,
) -> dict[str, str]:
    """The embedded-default environment plus what the components need on loopback."""
    base_url = f"http://127.0.0.1:{api_port}"
    env = airflow_env(aws.endpoint_url, warehouse_path, poll_seconds=poll_seconds, airflow_home=airflow_home)
    env.update(
        {
            # Anything that starts `airflow ...` by name finds the venv's first.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH_MANAGER,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(password_file),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(api_port),
            "AIRFLOW__API__BASE_URL": base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
            # New DAG files show up within seconds rather than minutes.
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "30",
            # A loopback stack: a database error's answer names its cause ("database is locked", say).
            "AIRFLOW__API__EXPOSE_STACKTRACE": "True",
        }
    )
    return env


def seed_days(warehouse_path: Path, days: Sequence[dt.date], rows_per_day: int, seed: int = 7) -> int:
    from include.demo_data import seed_sqlite

    warehouse_path.parent.mkdir(parents=True, exist_ok=True)
    return sum(seed_sqlite(warehouse_path, day, rows_per_day, seed) for day in days)


def api_token(base_url: str, username: str, password: str, timeout: float = 10.0) -> str:
    """A JWT for the REST API from the simple auth manager's ``/auth/token``."""
    import httpx

    response = httpx.post(
        f"{base_url}/auth/token", json={"username": username, "password": password}, timeout=timeout
    )
    response.raise_for_status()
    return response.json()["access_token"]


def wait_ready(stack: Stack, *, timeout: float = READY_TIMEOUT_S, dag_id: str = DAG_ID) -> None:
    """Bounded wait until every component reports healthy and the DAG is parsed and served."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Any = "no answer yet"
    while time.monotonic() < deadline:
        if exited := stack.exited():
            raise RuntimeError(f"Airflow components exited early: {exited}; logs in {stack.log_dir}")
        try:
            health = httpx.get(f"{stack.base_url}/api/v2/monitor/health", timeout=5).json()
            statuses = {name: (part or {}).get("status") for name, part in health.items()}
            if all(status == "healthy" for status in statuses.values()):
                token = api_token(stack.base_url, stack.username, stack.password)
                dag = httpx.get(
                    f"{stack.base_url}/api/v2/dags/{dag_id}",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=5,
                )
                if dag.status_code == 200:
                    return
                last = f"DAG {dag_id}: HTTP {dag.status_code}"
            else:
                last = statuses
        except (httpx.HTTPError, ValueError) as error:
            last = error
        time.sleep(1)
    raise RuntimeError(
        f"the Airflow stack was not ready within {timeout:.0f} s (last: {last}); logs in {stack.log_dir}"
    )


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM each process group (graceful shutdown), then kill whatever is left, children included."""
    import psutil

    family: list[psutil.Process] = []
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            parent = psutil.Process(process.pid)
            family += [parent, *parent.children(recursive=True)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # each component leads its own process group
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for proc in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)
    for process in processes:  # stragglers that left the process tree but not the group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)


@contextmanager
def airflow_stack(
    airflow_home: Path,
    *,
    api_port: int = DEFAULT_API_PORT,
    aws_port: int | None = None,
    speed: float = 0.1,
    poll_seconds: float = 1.0,
    days: Sequence[dt.date] = (),
    rows_per_day: int = 200,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Generator[Stack, None, None]:
    """Run the stand-in and the Airflow components until the block ends (`make up` and the e2e tests).

    ``speed`` divides the stand-in's simulated job durations; below 1 a job lasts long enough for
    the sensor to defer to the triggerer (about 20 s for 200 records at 0.1).
    """
    airflow_home.mkdir(parents=True, exist_ok=True)
    warehouse_path = airflow_home / "warehouse.db"
    password_file = airflow_home / "simple_auth_manager_passwords.json"
    with local_aws(airflow_home / "local_aws", port=aws_port, speed=speed) as aws:
        env = stack_env(
            aws,
            airflow_home=airflow_home,
            warehouse_path=warehouse_path,
            api_port=api_port,
            poll_seconds=poll_seconds,
            password_file=password_file,
        )
        prepare_airflow(env)
        create_bucket(aws.endpoint_url)
        seed_days(warehouse_path, days, rows_per_day)
        password = admin_password(password_file)
        log_dir = airflow_home / "logs" / "stack"
        log_dir.mkdir(parents=True, exist_ok=True)
        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        processes: dict[str, subprocess.Popen[bytes]] = {}
        stack = Stack(
            base_url=f"http://127.0.0.1:{api_port}",
            username=ADMIN_USER,
            password=password,
            password_file=password_file,
            airflow_home=airflow_home,
            warehouse_path=warehouse_path,
            aws=aws,
            processes=processes,
            log_dir=log_dir,
            env=env,
        )

        def start_component(name: str) -> subprocess.Popen[bytes]:
            with (log_dir / f"{name}.log").open("ab") as log_file:
                return subprocess.Popen(
                    [airflow_bin, *COMPONENTS[name]],
                    env=env,
                    cwd=airflow_home,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # Ctrl-C reaches only this script, which then stops them
                )

        stack.supervisor = Supervisor(processes, start_component, log_dir)
        try:
            for name in COMPONENTS:
                processes[name] = start_component(name)
            stack.supervisor.start()
            wait_ready(stack, timeout=ready_timeout)
            yield stack
        finally:
            stack.supervisor.stop()
            stop_processes(list(processes.values()))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="make up", description=__doc__)
    parser.add_argument("--port", type=int, default=DEFAULT_API_PORT, help="UI and REST API port")
    parser.add_argument("--days", type=int, default=3, help="days of demo transcripts, up to yesterday")
    parser.add_argument("--count", type=int, default=200, help="transcripts per day")
    parser.add_argument(
        "--speed", type=float, default=0.1, help="stand-in speed (below 1: jobs last long enough to watch)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not port_is_free(args.port):
        print(
            f"up: port {args.port} is busy; choose another with "
            f"`.venv/bin/python -m scripts.up --port {args.port + 1}`",
            file=sys.stderr,
        )
        return 1
    aws_port = DEFAULT_AWS_PORT if port_is_free(DEFAULT_AWS_PORT) else None
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    days = [yesterday - dt.timedelta(days=offset) for offset in range(args.days)]
    print(
        f"up: starting the stand-in, seeding {args.count} transcripts a day for {len(days)} days, "
        "then Airflow (about a minute)"
    )
    try:
        with airflow_stack(
            AIRFLOW_HOME,
            api_port=args.port,
            aws_port=aws_port,
            speed=args.speed,
            poll_seconds=2.0,
            days=days,
            rows_per_day=args.count,
        ) as stack:
            print(
                f"""
up: Airflow is ready at {stack.base_url}
    login:       {stack.username} / {stack.password}
                 (passwords of the simple auth manager: {stack.password_file})
    DAG grid:    {stack.base_url}/dags/{DAG_ID}
    batch jobs:  {stack.base_url}/bedrock-batch/ (also under Browse in the UI)
    REST API:    {stack.base_url}/api/v2 (JWT from POST {stack.base_url}/auth/token)
    local AWS:   {stack.aws.endpoint_url} (admin: {stack.aws.endpoint_url}/_local/jobs)
    logs:        {stack.log_dir}/<component>.log, task logs under {stack.airflow_home / "logs"}
    warehouse:   {stack.warehouse_path} (demo transcripts for {days[-1]} .. {days[0]})
    Unpause {DAG_ID} and use Trigger -> Backfill for those days (docs/operations.md).
    Ctrl-C stops everything.
""",
                flush=True,
            )
            while not (exited := stack.exited()):
                time.sleep(1)
            print(f"up: Airflow components exited: {exited}; see {stack.log_dir}", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        print("\nup: stopped")
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
