"""A throwaway Postgres server for the load benchmark (as tests/fixtures/postgres.py starts one).

Local binaries (``pg_config --bindir`` or /usr/lib/postgresql/*/bin), a temp data dir, a free
127.0.0.1 port, trust auth, fsync off; as root the server runs as the ``postgres`` user.

A new server creates each 16 MB WAL file the first time its WAL reaches it; a server in service
recycles the files of earlier checkpoints. On this machine a 50k-row job on a fresh server cost
Postgres 0.34-0.45 s of CPU against 0.19-0.23 s once its WAL files were recycled, so whichever load
ran first on the server (the project's) paid for the others. :meth:`Postgres.run_in` writes and
checkpoints WAL before each measured load, so every load meets a server as one in service would be.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_PG_USER = "postgres"
_START_TIMEOUT_S = 60
_ROWS_PER_WAL_MB = 1_400  # 600-byte rows with their primary key: ~0.7 MB of WAL a thousand rows


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str

    def airflow_uri(self, dbname: str) -> str:
        return f"postgres://{self.user}@{self.host}:{self.port}/{dbname}"

    @contextlib.contextmanager
    def _admin(self) -> Generator[Any, None, None]:
        """A cursor on the ``postgres`` database, in autocommit (for DDL, CHECKPOINT), closed after."""
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    def create_database(self) -> str:
        """A new empty database; its name."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        with self._admin() as cur:
            cur.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return name

    def run_in(self, wal_mb: int) -> None:
        """Write about ``wal_mb`` MB of WAL (a table filled and dropped) and checkpoint it, so the
        next load writes into recycled WAL files, as on a server in service (see the module doc)."""
        rows = max(1, wal_mb) * _ROWS_PER_WAL_MB
        with self._admin() as cur:
            cur.execute("DROP TABLE IF EXISTS bench_run_in")
            cur.execute("CREATE TABLE bench_run_in (id BIGINT PRIMARY KEY, filler TEXT)")
            cur.execute(
                "INSERT INTO bench_run_in SELECT g, repeat('x', 600) FROM generate_series(1, %s) g", (rows,)
            )
            cur.execute("DROP TABLE bench_run_in")
            cur.execute("CHECKPOINT")
        os.sync()  # with fsync off the checkpoint left its writes to the kernel: not during the load

    def drop_database(self, name: str) -> None:
        with self._admin() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def find_bindir() -> Path | None:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            )
            candidates.append(Path(out.stdout.strip()))
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for candidate in candidates:
        if all((candidate / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return candidate
    return None


def _as_pg_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    return [shutil.which("runuser") or "/usr/sbin/runuser", "-u", _PG_USER, "--", *argv]


def _run(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_as_pg_user(argv), capture_output=True, text=True, timeout=timeout, check=False)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def postgres_server() -> Generator[Postgres, None, None]:
    """Start a server for the block; raises RuntimeError when there are no binaries or it fails."""
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError("no Postgres binaries (pg_config --bindir, /usr/lib/postgresql/*/bin)")
    root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    datadir, sockdir = root / "data", root / "sock"
    sockdir.mkdir()
    if os.geteuid() == 0:
        import pwd

        try:
            uid = pwd.getpwnam(_PG_USER).pw_uid
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", _PG_USER], check=True, timeout=30)
            uid = pwd.getpwnam(_PG_USER).pw_uid
        for path in (root, sockdir):
            os.chown(path, uid, -1)
    port = _free_port()
    try:
        initdb = [str(bindir / "initdb"), "-D", str(datadir), "-U", _PG_USER, "--auth=trust"]
        init = _run([*initdb, "-E", "UTF8", "--locale=C"], timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockdir}"
            " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        pg_ctl = [str(bindir / "pg_ctl"), "-D", str(datadir), "-l", str(root / "postgres.log")]
        wait = ["-w", "-t", str(_START_TIMEOUT_S)]
        start = _run([*pg_ctl, "-o", options, *wait, "start"], timeout=_START_TIMEOUT_S + 10)
        if start.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {start.stderr[-2000:]}")
        yield Postgres("127.0.0.1", port, _PG_USER)
    finally:
        if datadir.exists():
            with contextlib.suppress(subprocess.TimeoutExpired):
                _run([str(bindir / "pg_ctl"), "-D", str(datadir), "stop", "-m", "fast", "-w"], timeout=40)
            pidfile = datadir / "postmaster.pid"
            if pidfile.exists():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pidfile.read_text().splitlines()[0]), signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
