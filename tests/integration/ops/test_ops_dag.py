"""The bedrock_batch_ops DAG: its form, and one real `airflow dags test` run of reconcile."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from pathlib import Path

import pytest

from bedrock_batch.job_tags import RunRef, run_ref
from bedrock_batch.ops import JOB_STATUSES
from tests.fixtures.airflow_env import airflow_metadata
from tests.fixtures.pipeline_configs import OWN_CONNECTION_ID, OWN_CONNECTION_PIPELINE

DAGS = Path(__file__).resolve().parents[3] / "dags"
DAG_ID = "bedrock_batch_ops"
PIPELINE = "summarize_calls"
PIPELINE_BUCKET = "bedrock-batch-tests"
"""The input bucket run_pipeline gives the pipeline (tests/fixtures/pipeline_run.py)."""
DAY = dt.date(2026, 10, 20)


@pytest.fixture(scope="module")
def ops_dag():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(DAGS / "bedrock_batch_ops.py"))
    assert bag.import_errors == {}
    return bag.dags[DAG_ID]


def test_ops_dag_is_manual_with_one_branch_per_action(ops_dag):
    assert type(ops_dag.timetable).__name__ == "NullTimetable"
    assert ops_dag.get_task("choose").downstream_task_ids == {
        "list_jobs",
        "stop_job",
        "reconcile",
        "list_windows",
        "release_window",
    }


def test_ops_dag_form_offers_every_status_action_and_mode(ops_dag):
    params = ops_dag.params
    assert params.get_param("status").schema["enum"] == ["any", *JOB_STATUSES]
    assert params.get_param("action").schema["enum"] == [
        "list",
        "stop",
        "reconcile",
        "windows",
        "release_window",
    ]
    assert params.get_param("reconcile_mode").schema["enum"] == ["report", "adopt", "stop"]
    assert all(params.get_param(name).description for name in params)


def test_reconcile_reports_orphans_and_leaves_the_jobs_a_run_recorded(
    run_pipeline, sqlite_warehouse, airflow_db, hook, make_job
):
    """The real chain: the submit operator tags jobs, the ops DAG asks the Task SDK about the runs."""
    # The stand-in serves the whole session: a job an earlier test made in the last second is older.
    earlier = {summary["jobArn"] for summary in hook.iter_jobs(max_items=1000)}
    since = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)).isoformat()
    nightly = run_pipeline(sqlite_warehouse, DAY, seed_count=120)
    assert nightly.returncode == 0, nightly.output[-3000:]
    ((run_id,),) = nightly.query("SELECT DISTINCT run_id FROM call_summaries")
    recorded = {arn for (arn,) in nightly.query("SELECT DISTINCT job_arn FROM call_summaries")}
    assert recorded and all(run_ref(hook.get_job_tags(arn)) == RunRef(PIPELINE, run_id) for arn in recorded)
    ours = f"s3://{PIPELINE_BUCKET}/bedrock-batch/input/{PIPELINE}"  # this deployment's input folder
    gone = make_job(f"gone-{uuid.uuid4().hex[:8]}", run=(PIPELINE, "manual__long-gone"), under=ours)
    unrecorded = make_job(f"unrec-{uuid.uuid4().hex[:8]}", run=(PIPELINE, run_id), under=ours)
    make_job(f"other-{uuid.uuid4().hex[:8]}", run=(PIPELINE, "manual__long-gone"))  # another deployment's

    conf = {"action": "reconcile", "reconcile_mode": "report", "submitted_after": since}
    done = airflow_db("dags", "test", DAG_ID, "-c", json.dumps(conf), timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    reported = set(re.findall(r"Orphan (arn:\S+) \(\w+\) of .+?: reported", output)) - earlier
    assert reported == {gone, unrecorded}, [line for line in output.splitlines() if "Orphan arn:" in line]


def test_a_mistake_in_the_form_fails_the_action_at_once_naming_the_field(airflow_db):
    conf = {"action": "list", "name_contains": "summarize_calls"}
    done = airflow_db("dags", "test", DAG_ID, "-c", json.dumps(conf), timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-4000:]
    assert "name_contains must be 1-63 letters" in output
    assert "job names use '-' where DAG ids use '_'" in output
    (run_id,) = set(re.findall(r"bedrock_batch_ops\.list_jobs (manual__\S+)", output))
    assert airflow_metadata(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (DAG_ID, run_id, "list_jobs"),
    ) == [("failed", 1)]  # no retry of what a retry cannot mend


def test_list_goes_through_the_named_pipelines_connection_and_region(
    airflow_db, eu_account, make_job, marker
):
    job_arn = make_job(f"eu-{marker}", region="eu-central-1")
    conf = {"action": "list", "pipeline": OWN_CONNECTION_PIPELINE, "name_contains": f"eu-{marker}"}
    done = airflow_db("dags", "test", DAG_ID, "-c", json.dumps(conf), timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"Asking AWS through connection {OWN_CONNECTION_ID}, region eu-central-1" in output
    assert job_arn in output
    assert ("bedrock:ListModelInvocationJobs", "eu-central-1") in eu_account.signed()
