"""The DAG built from a pipeline config: what its timetable makes of the config's dates."""

from __future__ import annotations

import datetime as dt

from bedrock_batch.config import PIPELINES_DIR, load_pipeline
from bedrock_batch.dag_factory import build_pipeline_dag


def test_the_first_run_summarizes_the_start_date_in_the_pipelines_time_zone():
    from airflow.serialization.serialized_objects import DagSerialization
    from airflow.timetables.base import TimeRestriction

    config = load_pipeline(PIPELINES_DIR / "summarize_calls.yaml").model_copy(
        update={"timezone": "Asia/Tokyo", "start_date": "2026-01-01"}
    )
    dag = build_pipeline_dag(config)
    timetable = DagSerialization.from_dict(DagSerialization.to_dict(dag)).timetable  # as the scheduler has it

    first = timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True),
    )

    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert first.data_interval.start == dt.datetime(2026, 1, 1, tzinfo=tokyo)
    assert first.data_interval.end == dt.datetime(2026, 1, 2, tzinfo=tokyo)


class _PlanOnly:
    """The ``ti`` a template sees, answering xcom_pull with a prepare plan."""

    def __init__(self, plan: dict) -> None:
        self.plan = plan

    def xcom_pull(self, task_ids: str, key: str) -> dict:
        assert (task_ids, key) == ("prepare", "plan")
        return self.plan


def test_submit_asks_for_the_invocation_type_the_plans_bodies_were_built_for():
    config = load_pipeline(PIPELINES_DIR / "summarize_calls.yaml")
    assert config.model.invocation_type == "InvokeModel"
    dag = build_pipeline_dag(config)
    submit = dag.get_task("batch_job.submit")
    template = dag.get_template_env().from_string(submit.invocation_type)

    assert template.render(ti=_PlanOnly({"invocation_type": "Converse"})) == "Converse"  # deployed since
    assert template.render(ti=_PlanOnly({"model_id": "x"})) == "InvokeModel"  # a plan from before


def test_the_dag_doc_names_the_shipped_config_file_relative_to_the_checkout():
    dag = build_pipeline_dag(load_pipeline(PIPELINES_DIR / "summarize_calls.yaml"))
    assert "Config: `include/pipelines/summarize_calls.yaml`" in dag.doc_md


def test_the_dag_doc_names_the_config_file_where_the_pipelines_dir_setting_points(monkeypatch, tmp_path):
    from bedrock_batch import dag_factory

    monkeypatch.setattr(dag_factory, "PIPELINES_DIR", tmp_path / "deploy" / "pipelines")
    dag = build_pipeline_dag(load_pipeline(PIPELINES_DIR / "summarize_calls.yaml"))
    assert f"Config: `{tmp_path}/deploy/pipelines/summarize_calls.yaml`" in dag.doc_md


def test_catchup_is_off_unless_the_pipeline_turns_it_on():
    config = load_pipeline(PIPELINES_DIR / "summarize_calls.yaml")
    assert build_pipeline_dag(config).catchup is False
    assert build_pipeline_dag(config.model_copy(update={"catchup": True})).catchup is True


FILE_NOTIFIER = "tests.fixtures.notifiers.FileNotifier"


def test_the_report_alone_calls_the_configured_notifiers_when_it_fails_for_good(tmp_path):
    from bedrock_batch.config import AlertsConfig, NotifierConfig
    from tests.fixtures.notifiers import FileNotifier

    config = load_pipeline(PIPELINES_DIR / "summarize_calls.yaml")
    alerts = AlertsConfig(on_failure=(NotifierConfig(notifier=FILE_NOTIFIER, kwargs={"path": "x.jsonl"}),))
    dag = build_pipeline_dag(config.model_copy(update={"alerts": alerts}))
    (notifier,) = dag.get_task("report").on_failure_callback
    assert isinstance(notifier, FileNotifier) and notifier.path == "x.jsonl"
    assert [task.task_id for task in dag.tasks if task.on_failure_callback] == ["report"]
    assert all(not task.on_failure_callback for task in build_pipeline_dag(config).tasks)
