"""The "Bedrock batch jobs" page (plugin.py) with Starlette's TestClient against the stand-in."""

from __future__ import annotations

import html
from urllib.parse import quote

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bedrock_batch.hooks import ACTIVE_STATUSES
from bedrock_batch.plugin import URL_PREFIX, BedrockBatchPlugin, create_app, current_user
from tests.fixtures.pipeline_configs import OWN_CONNECTION_ID, OWN_CONNECTION_PIPELINE
from tests.integration.bedrock.support import wait_terminal

DAG_ID = "summarize_calls"
RUN_ID = "manual__2026-11-10T00:00:00+00:00"
JOB_ARN = "arn:aws:bedrock:us-east-1:123456789012:model-invocation-job/abc123def456"


class Authorizer:
    """Records what the page asks the auth manager; refuses the methods in ``refuse``."""

    def __init__(self, refuse: tuple[str, ...] = ()) -> None:
        self.refuse = refuse
        self.asked: list[tuple[str, str | None]] = []

    def __call__(self, user, method, dag_id):
        assert user == "tester"
        self.asked.append((method, dag_id))
        return method not in self.refuse


def mounted(app: FastAPI) -> TestClient:
    """``app`` mounted the way Airflow's API server mounts plugin apps."""
    root = FastAPI()
    root.mount(URL_PREFIX, app)
    return TestClient(root)


@pytest.fixture
def authorizer() -> Authorizer:
    return Authorizer()


@pytest.fixture
def client(aws_env, authorizer) -> TestClient:
    """The app with a signed-in user "tester" (the auth dependency overridden) on the stand-in."""
    app = create_app(authorizer=authorizer)
    app.dependency_overrides[current_user] = lambda: "tester"
    return mounted(app)


def row_of(page: str, job_arn: str) -> str:
    start = page.index(f'<tr data-job-arn="{job_arn}"')
    return page[start : page.index("</tr>", start)]


def test_plugin_registers_the_app_and_a_nav_entry():
    (app_entry,) = BedrockBatchPlugin.fastapi_apps
    (view,) = BedrockBatchPlugin.external_views
    assert app_entry["url_prefix"] == "/bedrock-batch"
    assert view["name"] == "Bedrock batch jobs"
    assert view["destination"] == "nav"
    assert view["href"] == "bedrock-batch/"


def test_page_lists_jobs_with_status_progress_and_dag_run_link(client, make_job, hook, marker):
    job_arn = make_job(f"ui-{marker}", run=(DAG_ID, RUN_ID))
    wait_terminal(hook, job_arn)
    response = client.get(f"{URL_PREFIX}/", params={"name": marker})
    assert response.status_code == 200
    assert "<title>Bedrock batch jobs</title>" in response.text
    row = row_of(response.text, job_arn)
    assert f"ui-{marker}" in row
    assert 'data-status="Completed"' in row
    assert '<progress value="100" max="100">' in row
    assert f'href="/dags/{DAG_ID}/runs/{quote(RUN_ID, safe="")}"' in row
    assert 'class="stop"' not in row


def test_page_offers_stop_only_for_running_jobs(client, make_job, marker):
    running = make_job(f"ui-{marker}-run", run=(DAG_ID, RUN_ID), fault="stick")
    untagged = make_job(f"ui-{marker}-other", fault="stick")
    page = client.get(f"{URL_PREFIX}/", params={"name": marker}).text
    assert f'class="stop" type="button" data-arn="{running}"' in row_of(page, running)
    assert "not submitted by a DAG run" in row_of(page, untagged)
    # Inside the Airflow UI the page runs in a sandboxed frame that ignores window.confirm/alert.
    assert 'id="confirm-stop"' in page and "window.confirm" not in page and "window.alert" not in page
    assert 'target="_top"' not in page
    assert f'fetch("{URL_PREFIX}/api/jobs/stop"' in page


def test_page_says_a_jobs_run_is_unknown_when_its_tags_cannot_be_read(client, make_job, marker, local_aws):
    job_arn = make_job(f"ui-{marker}-tagless", run=(DAG_ID, RUN_ID), fault="stick")
    local_aws.admin.set_faults(access_denied={"ListTagsForResource": 50})

    page = client.get(f"{URL_PREFIX}/", params={"name": marker}).text

    row = row_of(page, job_arn)
    assert "its tags could not be read" in row
    assert "not submitted by a DAG run" not in row


def test_page_filters_by_status(client, make_job, hook, marker):
    failed = make_job(f"ui-{marker}-bad", fault="fail")
    done = make_job(f"ui-{marker}-ok")
    wait_terminal(hook, failed)
    wait_terminal(hook, done)
    page = client.get(f"{URL_PREFIX}/", params={"name": marker, "status": "Failed"}).text
    assert failed in page
    assert done not in page


def test_page_shows_a_bad_filter_instead_of_failing(client):
    response = client.get(f"{URL_PREFIX}/", params={"status": "Broken"})
    assert response.status_code == 200
    assert "status must be one of" in response.text


def test_page_looks_in_the_region_it_is_given_and_names_it(aws_env, authorizer, make_job, marker):
    app = create_app(authorizer=authorizer)  # the real hook, on the stand-in
    app.dependency_overrides[current_user] = lambda: "tester"
    job_arn = make_job(f"region-{marker}", region="eu-west-1")
    make_job(f"region-{marker}-home")  # in the connection's own region: not on this page

    page = mounted(app).get(f"{URL_PREFIX}/", params={"region": "eu-west-1", "name": marker}).text

    assert "on connection aws_default in eu-west-1" in page
    assert 'name="region" value="eu-west-1"' in page
    assert f'data-job-arn="{job_arn}"' in page
    assert f"region-{marker}-home" not in page


def test_page_lists_a_pipelines_jobs_through_its_own_connection_and_region(
    client, eu_account, make_job, marker
):
    job_arn = make_job(f"eu-{marker}", region="eu-central-1")

    page = client.get(f"{URL_PREFIX}/", params={"pipeline": OWN_CONNECTION_PIPELINE, "name": marker}).text

    assert f"on connection {OWN_CONNECTION_ID} in eu-central-1" in page
    assert f'<option value="{OWN_CONNECTION_PIPELINE}" selected>' in page
    assert f'data-pipeline="{OWN_CONNECTION_PIPELINE}"' in page  # what the Stop button sends
    assert f'data-job-arn="{job_arn}"' in page
    assert ("bedrock:ListModelInvocationJobs", "eu-central-1") in eu_account.signed()


def test_a_pipeline_given_with_stray_spaces_stays_chosen_in_the_form(client, eu_account):
    page = client.get(f"{URL_PREFIX}/", params={"pipeline": f" {OWN_CONNECTION_PIPELINE} "}).text
    assert f'<option value="{OWN_CONNECTION_PIPELINE}" selected>' in page
    assert f'data-pipeline="{OWN_CONNECTION_PIPELINE}"' in page


def test_stop_goes_through_the_pipelines_connection_in_the_region_of_the_jobs_arn(
    client, eu_account, make_job, marker
):
    running = make_job(f"eu-{marker}", run=(DAG_ID, RUN_ID), fault="stick")  # an ARN in us-east-1

    response = client.post(
        f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": running, "pipeline": OWN_CONNECTION_PIPELINE}
    )

    assert response.status_code == 200, response.text
    assert ("bedrock:StopModelInvocationJob", "us-east-1") in eu_account.signed()


def test_an_unknown_pipeline_is_refused_naming_the_known_ones(client, own_connection_pipeline):
    page = client.get(f"{URL_PREFIX}/", params={"pipeline": "calls_us"})
    assert "pipeline 'calls_us': no such pipeline config (known: calls_eu, summarize_calls)" in html.unescape(
        page.text
    )
    api = client.get(f"{URL_PREFIX}/api/jobs", params={"pipeline": "calls_us"})
    assert api.status_code == 400
    stop = client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": JOB_ARN, "pipeline": "calls_us"})
    assert stop.status_code == 400


def test_a_region_that_is_no_region_name_is_refused_naming_it(client):
    page = client.get(f"{URL_PREFIX}/", params={"region": "west"})
    assert "region 'west' is not an AWS region name" in html.unescape(page.text)
    api = client.get(f"{URL_PREFIX}/api/jobs", params={"region": "west"})
    assert api.status_code == 400


def test_api_lists_jobs_as_json_with_their_run(client, make_job, marker):
    job_arn = make_job(f"api-{marker}", run=(DAG_ID, RUN_ID))
    (row,) = client.get(f"{URL_PREFIX}/api/jobs", params={"name": marker}).json()
    assert row["job_arn"] == job_arn
    assert (row["dag_id"], row["run_id"]) == (DAG_ID, RUN_ID)
    assert row["dag_run_url"] == f"/dags/{DAG_ID}/runs/{quote(RUN_ID, safe='')}"


def test_stop_endpoint_stops_the_job(client, authorizer, make_job, hook, marker):
    job_arn = make_job(f"stop-{marker}", run=(DAG_ID, RUN_ID), fault="stick")
    response = client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": job_arn})
    assert response.status_code == 200
    assert response.json()["stopped"] is True
    assert wait_terminal(hook, job_arn)["status"] == "Stopped"
    assert ("PUT", DAG_ID) in authorizer.asked


def test_stop_endpoint_needs_edit_permission_on_the_jobs_dag(aws_env, make_job, hook, marker):
    app = create_app(authorizer=Authorizer(refuse=("PUT",)))
    app.dependency_overrides[current_user] = lambda: "tester"
    job_arn = make_job(f"deny-{marker}", run=(DAG_ID, RUN_ID), fault="stick")
    response = mounted(app).post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": job_arn})
    assert response.status_code == 403
    assert hook.get_job(job_arn)["status"] in ACTIVE_STATUSES - {"Stopping"}


def test_stop_endpoint_tells_a_user_who_may_not_read_dag_runs_nothing_about_the_job(
    aws_env, make_job, hook, marker
):
    app = create_app(authorizer=Authorizer(refuse=("GET", "PUT")))
    app.dependency_overrides[current_user] = lambda: "tester"
    job_arn = make_job(f"blind-{marker}", run=(DAG_ID, RUN_ID), fault="stick")
    unknown = job_arn[:-12] + "nosuchjob000"

    answers = [
        mounted(app).post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": arn}) for arn in (job_arn, unknown)
    ]

    assert [(answer.status_code, answer.json()) for answer in answers] == [
        (403, {"detail": "Forbidden: reading DAG runs is not allowed"})
    ] * 2
    assert hook.get_job(job_arn)["status"] in ACTIVE_STATUSES - {"Stopping"}


def test_stop_endpoint_rejects_a_malformed_arn(client):
    response = client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": "arn:aws:s3:::bucket"})
    assert response.status_code == 400
    assert "is not a Bedrock batch job ARN" in response.json()["detail"]


def test_stop_endpoint_refuses_a_form_post(client, make_job, hook, marker):
    """A cross-site HTML form cannot send JSON: the endpoint takes nothing else."""
    job_arn = make_job(f"form-{marker}", fault="stick")
    response = client.post(f"{URL_PREFIX}/api/jobs/stop", data={"job_arn": job_arn})
    assert response.status_code == 422
    assert hook.get_job(job_arn)["status"] in ACTIVE_STATUSES - {"Stopping"}


def test_unauthenticated_requests_are_refused(aws_env, make_job, hook, marker):
    """No override: the routes depend on Airflow's own get_user, which wants a JWT cookie or bearer."""
    client = mounted(create_app())
    job_arn = make_job(f"anon-{marker}", fault="stick")
    assert client.get(f"{URL_PREFIX}/").status_code == 401
    assert client.get(f"{URL_PREFIX}/api/jobs").status_code == 401
    assert client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": job_arn}).status_code == 401
    assert hook.get_job(job_arn)["status"] in ACTIVE_STATUSES - {"Stopping"}


@pytest.fixture
def airflow_tokens(airflow_db) -> dict[str, str]:
    """JWTs of Airflow's auth manager (SimpleAuthManager here) for an admin and a viewer."""
    from airflow.api_fastapi.app import create_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    manager = create_auth_manager()
    manager.init()
    return {
        role: manager.generate_jwt(SimpleAuthManagerUser(username=f"it-{role}", role=role))
        for role in ("admin", "viewer")
    }


def test_airflow_users_are_authorized_by_the_auth_manager(aws_env, airflow_tokens, make_job, hook, marker):
    """The real dependency chain: JWT cookie -> get_user -> the auth manager's DAG-run permissions."""
    client = mounted(create_app())
    job_arn = make_job(f"jwt-{marker}", run=(DAG_ID, RUN_ID), fault="stick")
    viewer = {"Cookie": f"_token={airflow_tokens['viewer']}"}
    page = client.get(f"{URL_PREFIX}/", params={"name": marker}, headers=viewer)
    assert page.status_code == 200
    assert job_arn in page.text
    refused = client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": job_arn}, headers=viewer)
    assert refused.status_code == 403
    admin = {"Authorization": f"Bearer {airflow_tokens['admin']}"}
    stopped = client.post(f"{URL_PREFIX}/api/jobs/stop", json={"job_arn": job_arn}, headers=admin)
    assert stopped.status_code == 200
    assert wait_terminal(hook, job_arn)["status"] == "Stopped"
