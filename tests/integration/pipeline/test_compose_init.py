"""docker-compose's airflow-init step (include/compose_init.py), against the stand-in and Postgres."""

from __future__ import annotations

import uuid

import pytest

from include import compose_init


@pytest.mark.postgres
def test_init_creates_the_buckets_and_seeds_the_days_once(
    aws_env, local_aws, postgres_warehouse, monkeypatch
):
    bucket = f"compose-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("AIRFLOW_VAR_BEDROCK_BATCH_INPUT_BUCKET", bucket)
    monkeypatch.setenv("AIRFLOW_VAR_BEDROCK_BATCH_OUTPUT_BUCKET", bucket)

    assert compose_init.main(["--days", "2", "--count", "25"]) == 0
    assert compose_init.main(["--days", "2", "--count", "25"]) == 0  # a restarted init adds nothing

    names = {b["Name"] for b in local_aws.client("s3").list_buckets()["Buckets"]}
    assert bucket in names
    conn = postgres_warehouse.connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT started_at::date) FROM call_transcripts")
        assert cur.fetchone() == (50, 2)
    finally:
        conn.close()
