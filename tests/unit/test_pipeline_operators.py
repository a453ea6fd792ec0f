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
