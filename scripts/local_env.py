"""The embedded default environment: the local AWS stand-in, a SQLite warehouse, Airflow settings.

Used by `make demo` and `make up` (and by the end-to-end tests) so all three run the same set-up.
Pointing the `aws_default` connection at real AWS and `warehouse_default` at a real warehouse is the
only difference from production.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Generator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The demo's and `make up`'s Airflow home, always in the checkout: an AIRFLOW_HOME inherited from the
#: shell (a real Airflow's) must not receive the stand-in's connections, metadata DB and passwords.
AIRFLOW_HOME = REPO / ".airflow"
DEMO_BUCKET = "bedrock-batch-demo"
DEMO_ROLE_ARN = "arn:aws:iam::123456789012:role/BedrockBatchInference"
JOBS_POOL = "bedrock_batch_jobs"
JOBS_POOL_SLOTS = 20
STARTUP_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalAws:
    process: subprocess.Popen[bytes]
    endpoint_url: str
    log_path: Path


@contextmanager
def local_aws(
    state_dir: Path, *, port: int | None = None, speed: float = 1.0
) -> Generator[LocalAws, None, None]:
    """Run ``python -m local_aws`` on a loopback port until the block ends."""
    port = port or free_port()
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "local_aws.log"
    with log_path.open("ab") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "local_aws",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--state-dir",
                str(state_dir),
                "--speed",
                str(speed),
            ],
            cwd=REPO,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LocalAws(process, f"http://127.0.0.1:{port}", log_path)
    try:
        _wait_healthy(server)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _wait_healthy(server: LocalAws) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"local_aws exited early; see {server.log_path}")
        try:
            with urllib.request.urlopen(f"{server.endpoint_url}/_local/health", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"local_aws did not answer within {STARTUP_TIMEOUT_S:.0f} s; see {server.log_path}")


def aws_connection(endpoint_url: str) -> str:
    """The `aws_default` connection as Airflow reads it from AIRFLOW_CONN_AWS_DEFAULT."""
    return json.dumps(
        {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {
                "endpoint_url": endpoint_url,
                "region_name": "us-east-1",
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
    )


def warehouse_connection(sqlite_path: Path) -> str:
    return json.dumps({"conn_type": "sqlite", "host": str(sqlite_path)})


def airflow_env(
    endpoint_url: str,
    sqlite_path: Path,
    *,
    poll_seconds: float = 2.0,
    airflow_home: Path = AIRFLOW_HOME,
) -> dict[str, str]:
    """Environment for Airflow commands run against the embedded default."""
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(endpoint_url),
        "AIRFLOW_CONN_WAREHOUSE_DEFAULT": warehouse_connection(sqlite_path),
        "AIRFLOW_VAR_BEDROCK_BATCH_ROLE_ARN": DEMO_ROLE_ARN,
        "AIRFLOW_VAR_BEDROCK_BATCH_INPUT_BUCKET": DEMO_BUCKET,
        "AIRFLOW_VAR_BEDROCK_BATCH_OUTPUT_BUCKET": DEMO_BUCKET,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "BEDROCK_BATCH_POLL_INTERVAL_SECONDS": str(poll_seconds),
        "BEDROCK_BATCH_RETRY_DELAY_SECONDS": "1",
    }


def create_bucket(endpoint_url: str, bucket: str = DEMO_BUCKET) -> None:
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)


def airflow(*args: str, env: dict[str, str], timeout: float = 900, check: bool = True) -> int:
    """Run the venv's `airflow` CLI; its output goes straight to the terminal."""
    command = [str(Path(sys.executable).with_name("airflow")), *args]
    done = subprocess.run(command, env=env, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise SystemExit(f"`airflow {' '.join(args)}` failed with exit code {done.returncode}")
    return done.returncode


def prepare_airflow(env: dict[str, str]) -> None:
    """Metadata DB migrated (idempotent) and the jobs pool sized to the concurrent-job quota."""
    Path(env.get("AIRFLOW_HOME", AIRFLOW_HOME)).mkdir(parents=True, exist_ok=True)
    airflow("db", "migrate", env=env)
    airflow(
        "pools",
        "set",
        JOBS_POOL,
        str(JOBS_POOL_SLOTS),
        "Bedrock batch jobs in flight (the account's concurrent-job quota)",
        "--include-deferred",
        env=env,
    )
