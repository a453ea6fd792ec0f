"""What `airflow-init` in docker-compose.yaml does after migrating: the demo's bucket and source rows.

`make up` does the same with local processes (scripts/up.py). Here everything is reached through the
stack's own Airflow connections and Variables (``aws_default``, ``warehouse_default``, the
``BEDROCK_BATCH_*_BUCKET`` Variables), so the step works with whatever the compose file points at.
Idempotent: an existing bucket is kept, and seeded days are inserted only where their rows are missing.

    python -m include.compose_init --days 3 --count 300
"""

from __future__ import annotations

import argparse
import logging
import os
from datetime import UTC, date, datetime, timedelta

from include.demo_data import SOURCE_TABLE, source_ddl, source_rows

log = logging.getLogger(__name__)

BUCKET_VARIABLES = ("BEDROCK_BATCH_INPUT_BUCKET", "BEDROCK_BATCH_OUTPUT_BUCKET")


def create_buckets(aws_conn_id: str = "aws_default") -> list[str]:
    """The input and output buckets the Variables name (as ``AIRFLOW_VAR_*``), created unless they exist."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    variables = (os.environ.get(f"AIRFLOW_VAR_{name}") for name in BUCKET_VARIABLES)  # compose sets them so
    names = sorted({name for name in variables if name})
    s3 = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3").conn
    existing = {bucket["Name"] for bucket in s3.list_buckets().get("Buckets", [])}
    for name in names:
        if name not in existing:
            s3.create_bucket(Bucket=name)
            log.info("Created bucket %s", name)
    return names


def seed_days(days: list[date], count: int, *, conn_id: str = "warehouse_default", seed: int = 7) -> int:
    """The demo source table in the warehouse, with ``count`` calls per day; rows already there are kept."""
    from airflow.providers.common.sql.hooks.sql import DbApiHook
    from airflow.sdk import BaseHook

    hook = BaseHook.get_connection(conn_id).get_hook()
    if not isinstance(hook, DbApiHook):
        raise TypeError(f"connection {conn_id!r} is not a SQL database")
    sqlite = hook.conn_type == "sqlite"
    mark = "?" if sqlite else "%s"
    conn = hook.get_conn()
    inserted = 0
    try:
        cur = conn.cursor()
        for statement in source_ddl():
            cur.execute(statement)
        for day in days:
            rows = list(source_rows(day, count, seed, sqlite=sqlite))
            cur.executemany(
                f"INSERT INTO {SOURCE_TABLE} (call_id, started_at, agent_id, customer_id, transcript)"
                f" VALUES ({mark}, {mark}, {mark}, {mark}, {mark}) ON CONFLICT (call_id) DO NOTHING",
                rows,
            )
            inserted += max(cur.rowcount, 0)
        conn.commit()
    finally:
        conn.close()
    return inserted


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m include.compose_init", description=__doc__)
    parser.add_argument("--days", type=int, default=3, help="days to seed, ending yesterday (UTC)")
    parser.add_argument("--count", type=int, default=300, help="calls per day")
    args = parser.parse_args(argv)
    if args.days < 0 or args.count < 0:
        parser.error("--days and --count must be >= 0")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    days = [yesterday - timedelta(days=back) for back in range(args.days)]
    buckets = create_buckets()
    seeded = seed_days(days, args.count)
    print(f"buckets {', '.join(buckets) or '(none)'}; {seeded} new source rows over {len(days)} days")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
