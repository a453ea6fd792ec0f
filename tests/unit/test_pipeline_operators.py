"""What the pipeline's own operators take from the run's prepare plan rather than from the config."""

from __future__ import annotations

import pytest

from bedrock_batch.pipeline_operators import CollectResultsOperator, OnDemandOperator


@pytest.mark.parametrize("operator_class", [CollectResultsOperator, OnDemandOperator])
def test_collect_and_on_demand_read_bodies_with_the_api_the_plan_built_them_for(operator_class):
    kwargs = {"job": {}} if operator_class is CollectResultsOperator else {}
    operator = operator_class(task_id="t", pipeline="summarize_calls", **kwargs)
    assert operator.config.model.invocation_type == "InvokeModel"
    assert operator._planned_invocation_type({"invocation_type": "Converse"}) == "Converse"
    assert operator._planned_invocation_type({"model_id": "x"}) == "InvokeModel"  # a plan from before


def test_the_on_demand_runtime_client_lays_its_timeouts_over_the_connections_config(monkeypatch):
    import json

    from bedrock_batch.on_demand import RUNTIME_CLIENT_CONFIG

    extra = {"region_name": "us-east-1", "config_kwargs": {"user_agent_extra": "from-the-connection"}}
    conn = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(conn))
    operator = OnDemandOperator(task_id="t", pipeline="summarize_calls")

    config = operator.aws_client("bedrock-runtime", RUNTIME_CLIENT_CONFIG).meta.config

    assert config.read_timeout == RUNTIME_CLIENT_CONFIG["read_timeout"]
    assert config.retries["total_max_attempts"] == 1
    assert "from-the-connection" in config.user_agent_extra  # the connection's own settings are kept
