"""The Airflow UI on the full stack, in headless Chromium: login, the DAG grid, the batch-jobs page.

Screenshots go to tests/e2e/screenshots/ (git-ignored); the grid's is also copied to
docs/images/ui-dag-grid.png for the README when UPDATE_README_IMAGE=1. Needs Debian's chromium:
skipped without it, except in CI (CI=true), where a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.e2e.conftest import DAG_ID
from tests.fixtures.ci import chromium_path, missing

pytestmark = [pytest.mark.browser, pytest.mark.airflow_stack, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).parent / "screenshots"
README_IMAGE = REPO / "docs" / "images" / "ui-dag-grid.png"
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def browser():
    chromium = chromium_path()
    if chromium is None:
        missing("chromium is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(browser, airflow_stack, backfill):
    """A page logged in through the UI's login form, which then lands on the DAG asked for."""
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{airflow_stack.base_url}/dags/{DAG_ID}", wait_until="domcontentloaded")
    page.wait_for_url("**/auth/login**")
    page.fill("input[name=username]", airflow_stack.username)
    page.fill("input[name=password]", airflow_stack.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/dags/{DAG_ID}")
    SCREENSHOTS.mkdir(exist_ok=True)
    try:
        yield page
    finally:
        context.close()


def test_login_form_leads_back_to_the_dag_page(page):
    page.get_by_text(DAG_ID, exact=True).first.wait_for()
    assert page.url.endswith(f"/dags/{DAG_ID}")


def test_dag_grid_shows_every_backfill_run(page, airflow_stack, backfill):
    page.goto(f"{airflow_stack.base_url}/dags/{DAG_ID}", wait_until="networkidle")
    for run in backfill.runs:
        for task_id in ("prepare", "batch_job", "report"):
            cell = page.get_by_test_id(f"grid-{run['dag_run_id']}-{task_id}")
            cell.wait_for()
            assert cell.is_visible(), (run["dag_run_id"], task_id)
    page.get_by_test_id("expand-all-button").click()  # show submit / wait / collect of each job
    page.get_by_test_id(f"grid-{backfill.runs[0]['dag_run_id']}-batch_job.wait").wait_for()
    page.screenshot(path=SCREENSHOTS / "dag-grid.png")
    if os.environ.get("UPDATE_README_IMAGE"):  # a test run must not dirty a tracked file
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SCREENSHOTS / "dag-grid.png", README_IMAGE)


def test_runs_tab_lists_the_backfill_runs_as_succeeded(page, airflow_stack, backfill):
    page.goto(f"{airflow_stack.base_url}/dags/{DAG_ID}/runs", wait_until="networkidle")
    for run in backfill.runs:
        row = page.locator("tr", has_text=run["dag_run_id"])
        row.wait_for()
        assert "Success" in row.inner_text()
        assert "Backfill" in row.inner_text()
    page.screenshot(path=SCREENSHOTS / "dag-runs.png")


def test_batch_jobs_page_lists_each_backfill_job_with_its_run(page, airflow_stack, backfill):
    page.goto(f"{airflow_stack.base_url}/bedrock-batch/", wait_until="networkidle")
    page.get_by_role("heading", name="Bedrock batch jobs").wait_for()
    backfill_runs = {run["dag_run_id"] for run in backfill.runs}
    linked_runs = set()
    for job in airflow_stack.aws_admin.jobs()[backfill.jobs_before :]:  # the backfill submitted these
        row = page.locator(f'table#jobs tr[data-job-arn="{job["job_arn"]}"]')
        row.wait_for()
        assert row.get_attribute("data-status") == "Completed"
        assert job["job_name"] in row.inner_text()
        href = unquote(row.locator("a").first.get_attribute("href") or "")
        linked_runs |= {run_id for run_id in backfill_runs if run_id in href}
    page.screenshot(path=SCREENSHOTS / "batch-jobs.png", full_page=True)
    assert linked_runs == backfill_runs


def test_a_run_link_in_the_batch_jobs_view_opens_the_run_in_the_airflow_ui_not_in_its_frame(
    page, airflow_stack, backfill
):
    run_id = backfill.runs[0]["dag_run_id"]
    page.goto(f"{airflow_stack.base_url}/plugin/bedrock-batch", wait_until="networkidle")
    frame = page.frame_locator("iframe")

    frame.locator("a.run-link", has_text=run_id).first.click()

    page.wait_for_url(f"**/dags/{DAG_ID}/runs/**", timeout=TIMEOUT_MS)
    assert unquote(page.url).endswith(f"/dags/{DAG_ID}/runs/{run_id}")
    page.get_by_text(run_id).first.wait_for(timeout=TIMEOUT_MS)  # the UI shows the run itself,
    assert page.locator("iframe").count() == 0  # not a second UI inside the view's frame
    page.screenshot(path=SCREENSHOTS / "run-from-batch-jobs.png", full_page=True)


def test_a_job_is_stopped_from_the_batch_jobs_view_inside_the_airflow_ui(page, airflow_stack, backfill):
    """The view runs in the UI's sandboxed frame, where window.confirm is ignored: asked in the page."""
    import time

    import boto3

    from bedrock_batch.job_tags import run_tags

    done = airflow_stack.aws_admin.jobs()[backfill.jobs_before]
    bedrock = boto3.client(
        "bedrock",
        endpoint_url=airflow_stack.aws_endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    tags = {**run_tags(dag_id=DAG_ID, run_id=backfill.runs[0]["dag_run_id"]), "local-aws:fault": "stick"}
    job_arn = bedrock.create_model_invocation_job(
        jobName="ui-stop-from-the-frame",
        roleArn=done["role_arn"],
        modelId=done["model_id"],
        inputDataConfig=done["input_data_config"],
        outputDataConfig=done["output_data_config"],
        tags=[{"key": key, "value": value} for key, value in tags.items()],
    )["jobArn"]

    page.goto(f"{airflow_stack.base_url}/plugin/bedrock-batch", wait_until="networkidle")
    frame = page.frame_locator("iframe")
    row = frame.locator(f'table#jobs tr[data-job-arn="{job_arn}"]')
    row.get_by_role("button", name="Stop").click()
    frame.get_by_role("dialog", name="Stop a batch job").get_by_role("button", name="Stop job").click()

    deadline = time.monotonic() + 60
    status = ""
    while time.monotonic() < deadline and status not in ("Stopping", "Stopped"):
        status = bedrock.get_model_invocation_job(jobIdentifier=job_arn)["status"]
        time.sleep(0.5)
    assert status in ("Stopping", "Stopped")
    assert frame.locator("#notice").is_hidden()
