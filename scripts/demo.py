"""`make demo`: one nightly run end to end on the embedded default.

Starts the local AWS stand-in, seeds one day of demo call transcripts into a SQLite warehouse, runs
the `summarize_calls` DAG for that day with `airflow dags test`, then prints where every source row
went and three summaries read back from the warehouse. Exits non-zero if the run failed or any row
is unaccounted for.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import sys
import textwrap

from scripts.local_env import AIRFLOW_HOME, airflow, airflow_env, create_bucket, local_aws, prepare_airflow

#: Airflow home of the demo run (metadata DB, logs), inside the checkout's git-ignored ``.airflow/``.
DEMO_AIRFLOW_HOME = AIRFLOW_HOME / "demo"

DAG_ID = "summarize_calls"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    yesterday = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--day", type=dt.date.fromisoformat, default=yesterday, help="day to process (UTC)")
    parser.add_argument("--count", type=int, default=500, help="transcripts to seed for the day")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the warehouse of earlier demo runs (shows an idempotent rerun)",
    )
    return parser.parse_args(argv)


def account_for_rows(db: sqlite3.Connection, day: dt.date) -> dict[str, int]:
    """Every source row of the day is summarized, errored or carried over, and exactly one of them."""
    start = dt.datetime.combine(day, dt.time()).isoformat(sep=" ")
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).isoformat(sep=" ")
    rows = db.execute(
        """
        SELECT
          EXISTS (SELECT 1 FROM call_summaries s WHERE s.source_key = t.call_id),
          EXISTS (SELECT 1 FROM call_summary_pending p WHERE p.source_key = t.call_id),
          EXISTS (SELECT 1 FROM call_summary_errors e WHERE e.source_key = t.call_id)
        FROM call_transcripts t WHERE t.started_at >= ? AND t.started_at < ?
        """,
        (start, end),
    ).fetchall()
    counts = {
        "source_rows": len(rows),
        "summarized": 0,
        "carried_over": 0,
        "errored": 0,
        "unaccounted": 0,
        "in_two_states": 0,
    }
    for summarized, pending, errored in rows:
        if summarized + pending > 1:
            counts["in_two_states"] += 1
        if summarized:
            counts["summarized"] += 1
        elif pending:
            counts["carried_over"] += 1
        elif errored:
            counts["errored"] += 1
        else:
            counts["unaccounted"] += 1
    return counts


def print_samples(db: sqlite3.Connection, count: int = 3) -> None:
    samples = db.execute(
        "SELECT source_key, model_id, input_tokens, output_tokens, summary FROM call_summaries "
        "ORDER BY source_key LIMIT ?",
        (count,),
    ).fetchall()
    for key, model_id, tokens_in, tokens_out, summary in samples:
        print(f"\n--- {key} ({model_id}, {tokens_in} -> {tokens_out} tokens)")
        print(textwrap.fill(summary or "", width=100, initial_indent="    ", subsequent_indent="    "))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from include.demo_data import seed_sqlite

    # Everything the demo writes is under .airflow/demo/, apart from `make up`'s warehouse and stand-in.
    warehouse_path = DEMO_AIRFLOW_HOME / "warehouse.db"
    DEMO_AIRFLOW_HOME.mkdir(parents=True, exist_ok=True)
    if not args.keep:
        for stale in DEMO_AIRFLOW_HOME.glob("warehouse.db*"):
            stale.unlink()
    # A metadata DB of its own, new each time: `airflow dags test` runs no scheduler, so nothing
    # would retire what an earlier checkout registered (an asset of the same name, say) in a kept one.
    for stale in DEMO_AIRFLOW_HOME.glob("airflow.db*"):
        stale.unlink()
    with local_aws(DEMO_AIRFLOW_HOME / "local_aws") as aws:
        print(f"demo: local AWS stand-in on {aws.endpoint_url}")
        env = airflow_env(aws.endpoint_url, warehouse_path, airflow_home=DEMO_AIRFLOW_HOME)
        prepare_airflow(env)
        create_bucket(aws.endpoint_url)
        seeded = seed_sqlite(warehouse_path, args.day, args.count, args.seed)
        print(f"demo: {seeded} call transcripts for {args.day} in {warehouse_path}")
        # A manual run at midnight after the day covers the day, as the nightly scheduled run does.
        run_date = (args.day + dt.timedelta(days=1)).isoformat()
        code = airflow("dags", "test", DAG_ID, run_date, env=env, timeout=1800, check=False)

    with sqlite3.connect(warehouse_path) as db:
        counts = account_for_rows(db, args.day)
        print(f"\ndemo: where the {counts['source_rows']} source rows of {args.day} went:")
        for name in ("summarized", "errored", "carried_over", "unaccounted", "in_two_states"):
            print(f"  {name:<14} {counts[name]}")
        print_samples(db)
    if code != 0:
        print(f"\ndemo: the DAG run failed (exit code {code}); see the task logs above.", file=sys.stderr)
        return 1
    if counts["unaccounted"] or counts["in_two_states"] or counts["summarized"] == 0:
        print("\ndemo: some source rows are not accounted for exactly once.", file=sys.stderr)
        return 1
    print("\ndemo: OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
