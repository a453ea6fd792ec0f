"""quotas_from_service with a real boto3 Service Quotas client against the stand-in over HTTP."""

from __future__ import annotations

import socket

import boto3
import pytest
from botocore.config import Config

from bedrock_batch.quotas import GB, BatchQuotas, default_quotas, plan_job_sizes, quotas_from_service


@pytest.fixture
def service_quotas(local_aws_clean):
    return local_aws_clean.client("service-quotas")


@pytest.mark.parametrize(
    "model_id",
    [
        "anthropic.claude-3-5-haiku-20241022-v1:0",
        "us.amazon.nova-micro-v1:0",
        "meta.llama3-1-70b-instruct-v1:0",
    ],
)
def test_quotas_from_service_reads_the_accounts_batch_quotas(local_aws_clean, service_quotas, model_id):
    local_aws_clean.admin.set_quotas(
        min_records_per_job=10,
        max_records_per_file=300,
        max_records_per_job=1_000,
        max_file_bytes=GB // 4,
        max_job_bytes=2 * GB,
        max_concurrent_jobs=3,
    )

    quotas = quotas_from_service(service_quotas, model_id, default_quotas(model_id))

    assert quotas == BatchQuotas(
        min_records_per_job=10,
        max_records_per_file=300,
        max_records_per_job=1_000,
        max_file_bytes=GB // 4,
        max_job_bytes=2 * GB,
        max_concurrent_jobs=3,
    )
    assert plan_job_sizes(2_001, quotas) == [667, 667, 667]


def test_quotas_from_service_for_a_model_the_account_lacks_returns_base(service_quotas):
    base = default_quotas("cohere.command-r-v1:0")
    assert quotas_from_service(service_quotas, "cohere.command-r-v1:0", base) is base


def test_quotas_from_service_when_the_endpoint_is_unreachable_returns_base():
    with socket.socket() as sock:  # a port nothing listens on once the socket is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = boto3.client(
        "service-quotas",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(connect_timeout=1, read_timeout=1, retries={"max_attempts": 1}),
    )
    base = default_quotas("anthropic.claude-3-5-haiku-20241022-v1:0")
    assert quotas_from_service(client, "anthropic.claude-3-5-haiku-20241022-v1:0", base) is base
