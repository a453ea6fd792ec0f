"""Which failures count as one of a record's max_attempts tries: only those where a model had it."""

from __future__ import annotations

import inspect

import botocore.exceptions
import pytest

from bedrock_batch.warehouse import (
    JOB_STAGE,
    MODEL_STAGE,
    NOT_REACHED_MODEL_CODES,
    OUTPUT_MISSING,
    spends_attempt,
)


@pytest.mark.parametrize(
    ("stage", "code"),
    [
        (MODEL_STAGE, "500"),
        (MODEL_STAGE, "400"),
        (MODEL_STAGE, "ModelTimeoutException"),
        (JOB_STAGE, OUTPUT_MISSING),
    ],
)
def test_a_try_that_reached_a_model_spends_an_attempt(stage, code):
    assert spends_attempt(stage, code)


@pytest.mark.parametrize(
    ("stage", "code"),
    [
        (JOB_STAGE, "job_failed"),
        (JOB_STAGE, "job_expired"),
        (JOB_STAGE, "job_stopped"),
        (JOB_STAGE, "job_partiallycompleted"),
        (MODEL_STAGE, "429"),
        (MODEL_STAGE, "EndpointConnectionError"),
    ],
)
def test_a_record_no_model_took_up_spends_no_attempt(stage, code):
    assert not spends_attempt(stage, code)


def test_every_connection_botocore_could_not_make_is_named_as_not_reaching_a_model():
    never_connected = {
        name
        for name, cls in inspect.getmembers(botocore.exceptions, inspect.isclass)
        if issubclass(cls, botocore.exceptions.ConnectionError)
    }
    assert never_connected <= set(NOT_REACHED_MODEL_CODES)
