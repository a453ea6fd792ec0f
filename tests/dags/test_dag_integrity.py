"""DAG integrity: every DAG file imports cleanly, cheaply, and carries the metadata operators rely on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
PIPELINES = REPO / "include" / "pipelines"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_pipeline_config_has_a_dag(dagbag):
    from bedrock_batch.config import discover_pipelines

    names = {path.stem for path in discover_pipelines(PIPELINES)}
    assert names, "no pipeline configs found"
    assert names <= set(dagbag.dag_ids)


def test_every_dag_has_tags_owner_and_docs(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 40, f"{dag_id} has no doc_md"
        assert dag.default_args.get("owner") not in (None, "", "airflow"), f"{dag_id} has no owner"


def test_every_task_retries_at_least_twice(dagbag):
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries={task.retries}"


def test_every_task_backs_off_its_retries_by_a_float_multiplier(dagbag):
    # Airflow 3.3 reads retry_exponential_backoff as the multiplier: True would mean 1 (no growth).
    assert dagbag.dags
    for dag_id, dag in dagbag.dags.items():
        for task in dag.tasks:
            backoff = task.retry_exponential_backoff
            assert type(backoff) is float and backoff > 1, f"{dag_id}.{task.task_id}: {backoff!r}"


def effective_weight(task) -> int:
    """The weight the scheduler gives the task (Airflow's absolute / downstream / upstream rules)."""
    rule = str(task.weight_rule)
    if rule == "absolute":
        return task.priority_weight
    dag = task.dag
    relatives = task.get_flat_relative_ids(upstream=rule == "upstream")
    return task.priority_weight + sum(dag.task_dict[task_id].priority_weight for task_id in relatives)


def test_a_submitted_jobs_wait_takes_a_free_pool_slot_before_another_submit(dagbag):
    from bedrock_batch.config import discover_pipelines

    for path in discover_pipelines(PIPELINES):
        dag = dagbag.dags[path.stem]
        wait, submit = dag.get_task("batch_job.wait"), dag.get_task("batch_job.submit")
        assert wait.pool == submit.pool
        assert effective_weight(wait) > effective_weight(submit)


def test_the_submit_waits_for_bedrocks_quota_as_the_config_says(dagbag):
    from bedrock_batch.config import discover_pipelines, load_pipeline

    for path in discover_pipelines(PIPELINES):
        jobs = load_pipeline(path).jobs
        submit = dagbag.dags[path.stem].get_task("batch_job.submit")
        assert submit.quota_retry_seconds == jobs.quota_retry_minutes * 60
        assert submit.quota_max_wait_seconds == jobs.quota_max_wait_hours * 3600


GUARD = r"""
import json, socket, sqlite3, sys
import airflow  # Airflow's own start-up is not the DAG files' doing
from airflow.dag_processing.dagbag import DagBag

attempts = []

def refuse(what):
    def _refuse(*args, **kwargs):
        attempts.append(f"{what} {args[:2]!r}")
        raise RuntimeError(f"DAG parsing must not open {what}")
    return _refuse

socket.socket.connect = refuse("socket.connect")
socket.create_connection = refuse("socket.create_connection")
socket.getaddrinfo = refuse("socket.getaddrinfo")
sqlite3.connect = refuse("sqlite3.connect")
try:
    import psycopg2
    psycopg2.connect = refuse("psycopg2.connect")
except ImportError:
    pass

bag = DagBag(dag_folder=sys.argv[1])
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids), "attempts": attempts}))
"""


def test_parsing_dags_opens_no_network_and_no_database(tmp_path):
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}", "AIRFLOW_HOME": str(tmp_path)}
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    done = subprocess.run(
        [sys.executable, "-c", GUARD, str(DAGS)],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["attempts"] == []
    assert report["errors"] == {}
    assert report["dags"], "no DAGs were loaded"
