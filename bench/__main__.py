"""``python -m bench [--sizes 10000,100000] [--quick] [--only stage,load,wait,parse]``.

Starts its own stand-in (scripts.local_env) and a throwaway Postgres, runs every measurement in
a fresh subprocess, prints a table and writes bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

from bench.common import BUCKET, ENDPOINT_ENV
from bench.report import row, table
from bench.runner import REPO, Measured, MeasurementError, measure, median_run

SCENARIOS = ("stage", "load", "wait", "parse")
DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
RESULTS = REPO / "bench" / "results" / "latest.json"
WAIT_JOB_HOURS = 2.0
WAIT_SCALE = 400.0
"""Simulated seconds per wall second in the waiting scenario (a 2 h job takes 18 s)."""
POLL_INTERVAL_S = 60.0
MAX_POLL_INTERVAL_S = 600.0
REPEATED_BELOW = 1_000_000
REPEATS = 3
"""Sizes under REPEATED_BELOW are measured REPEATS times, paths interleaved, and the median run kept:
their runs take seconds, and one run's figure here moves by 10-30 %."""
RUN_IN_MIN_MB = 64
RUN_IN_MB_PER_RECORD = 0.001
"""WAL written before each measured Postgres load: ~1.5x what a load writes (0.66 KB a record)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="record counts")
    parser.add_argument("--quick", action="store_true", help="10k records only")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="scenarios to run")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.sizes = [10_000] if args.quick else [int(s) for s in args.sizes.split(",") if s.strip()]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown or any(size < 200 for size in args.sizes):
        parser.error(f"scenarios are {', '.join(SCENARIOS)}; sizes must be >= 200")
    return args


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def base_env(tmp: Path) -> dict[str, str]:
    return {
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def _try(label: str, fn: Callable[[], Measured]) -> Measured | str:
    """The measurement, or its error text (the run goes on; the row shows the error)."""
    log(label)
    try:
        measured = fn()
    except MeasurementError as error:
        log(f"{label} FAILED: {str(error)[-1500:]}")
        return str(error).splitlines()[0][:200]
    log(f"{label}: {measured.wall_seconds:.1f} s wall, peak RSS {measured.peak_rss_mb:.0f} MB")
    return measured


def repeats(size: int) -> int:
    return REPEATS if size < REPEATED_BELOW else 1


def _median(runs: list[Measured | str]) -> Measured | str:
    """The median of a measurement's repeats, or the first error among them (the log names its run)."""
    errors = [run for run in runs if isinstance(run, str)]
    return errors[0] if errors else median_run([run for run in runs if isinstance(run, Measured)])


def _rates(m: Measured | str) -> list[float] | None:
    """Every repeat's rate of a measurement (one for a size measured once; ``None`` for an error)."""
    if not isinstance(m, Measured):
        return None
    return [round(rate, 1) for rate in m.result.get("rates", [])] or None


def _rate(m: Measured | str, key: str = "records") -> float | None:
    return m.result[key] / m.result["seconds"] if isinstance(m, Measured) and m.result["seconds"] else None


def _rss(m: Measured | str) -> float | None:
    return m.peak_rss_mb if isinstance(m, Measured) else None


def _error(*ms: Measured | str) -> dict[str, str]:
    errors = [m for m in ms if isinstance(m, str)]
    return {"error": "; ".join(errors)} if errors else {}


def stage_rows(size: int, env: dict[str, str]) -> list[dict[str, Any]]:
    def run(target: str, label: str, **kwargs: Any) -> Measured | str:
        return _try(
            f"stage {target} {kwargs or ''} size={size} ({label})",
            lambda: measure(target, env=env, size=size, **kwargs),
        )

    paths = {
        "serialize": ("bench.stage:serialize_limit", {}),
        "null": ("bench.stage:project", {"sink": "null"}),
        "s3": ("bench.stage:project", {}),
        "naive": ("bench.stage:baseline", {}),
        "upload": ("bench.stage:upload_limit", {}),
    }
    runs: dict[str, list[Measured | str]] = {name: [] for name in paths}
    for repeat in range(1, repeats(size) + 1):
        for name, (target, kwargs) in paths.items():
            runs[name].append(run(target, f"run {repeat} of {repeats(size)}", **kwargs))
    serialize, null, s3, naive, upload = (_median(runs[name]) for name in paths)
    null_rate, serialize_rate = _rate(null), _rate(serialize)
    s3_rate, naive_rate, upload_rate = _rate(s3), _rate(naive), _rate(upload)
    mb = 1e6
    return [
        row(
            "stage_null_sink",
            size,
            "records/s",
            null_rate,
            limit=serialize_rate,
            peak_rss_mb=_rss(null),
            limit_peak_rss_mb=_rss(serialize),
            target=">= 0.5 x raw orjson rate (limit)",
            met=bool(null_rate and serialize_rate and null_rate >= 0.5 * serialize_rate),
            project_mb_s=_rate(null, "bytes") / mb if _rate(null, "bytes") else None,
            limit_mb_s=_rate(serialize, "bytes") / mb if _rate(serialize, "bytes") else None,
            project_runs=_rates(null),
            limit_runs=_rates(serialize),
            **_error(null, serialize),
        ),
        row(
            "stage_s3",
            size,
            "records/s",
            s3_rate,
            baseline=naive_rate,
            limit=upload_rate,
            peak_rss_mb=_rss(s3),
            baseline_peak_rss_mb=_rss(naive),
            limit_peak_rss_mb=_rss(upload),
            target=">= 2 x baseline and >= 0.8 x raw multipart upload rate (limit)",
            met=bool(
                s3_rate
                and naive_rate
                and upload_rate
                and s3_rate >= 2 * naive_rate
                and s3_rate >= 0.8 * upload_rate
            ),
            project_mb_s=_rate(s3, "bytes") / mb if _rate(s3, "bytes") else None,
            baseline_mb_s=_rate(naive, "bytes") / mb if _rate(naive, "bytes") else None,
            limit_mb_s=_rate(upload, "bytes") / mb if _rate(upload, "bytes") else None,
            project_runs=_rates(s3),
            baseline_runs=_rates(naive),
            limit_runs=_rates(upload),
            **_error(s3, naive, upload),
        ),
    ]


def load_rows(size: int, env: dict[str, str], pg: Any, tmp: Path) -> list[dict[str, Any]]:
    setup = _try(f"load set-up size={size}", lambda: measure("bench.load:setup", env=env, size=size))
    if isinstance(setup, str):
        return [row(f"load_{d}", size, "records/s", None, error=setup) for d in ("postgres", "sqlite")]
    jobs_file = tmp / f"load-jobs-{size}.json"
    jobs_file.write_text(json.dumps(setup.result))
    rows = []
    for dialect in ("postgres", "sqlite"):
        if dialect == "postgres" and isinstance(pg, str):
            rows.append(row("load_postgres", size, "records/s", None, error=pg))
            continue
        runs: dict[str, list[Measured | str]] = {"project": [], "baseline": []}
        for repeat in range(1, repeats(size) + 1):
            for path in runs:
                label = f"run {repeat} of {repeats(size)}"
                runs[path].append(_load_once(dialect, path, size, env, pg, tmp, jobs_file, label))
        measured = {path: _median(path_runs) for path, path_runs in runs.items()}
        project, naive = _rate(measured["project"]), _rate(measured["baseline"])
        factor = 5 if dialect == "postgres" else 1
        rows.append(
            row(
                f"load_{dialect}",
                size,
                "records/s",
                project,
                baseline=naive,
                peak_rss_mb=_rss(measured["project"]),
                baseline_peak_rss_mb=_rss(measured["baseline"]),
                target=f">= {factor} x baseline",
                met=bool(project and naive and project >= factor * naive),
                project_runs=_rates(measured["project"]),
                baseline_runs=_rates(measured["baseline"]),
                **_error(*measured.values()),
            )
        )
    return rows


def _load_once(
    dialect: str, path: str, size: int, env: dict[str, str], pg: Any, tmp: Path, jobs_file: Path, label: str
) -> Measured | str:
    """One load of the size's output files into a new database (Postgres: on a server run in)."""
    if dialect == "postgres":
        try:
            pg.run_in(max(RUN_IN_MIN_MB, round(size * RUN_IN_MB_PER_RECORD)))
            database = pg.create_database()
        except Exception as error:  # the row shows it; the run goes on
            log(f"load {dialect} {path} size={size} ({label}): Postgres set-up FAILED: {error}")
            return f"Postgres set-up failed: {str(error).splitlines()[0][:200]}"
        uri = pg.airflow_uri(database)
    else:
        database = str(tmp / f"warehouse-{size}-{path}.sqlite")
        uri = json.dumps({"conn_type": "sqlite", "host": database})
    child = {**env, "AIRFLOW_CONN_WAREHOUSE_DEFAULT": uri}
    try:
        return _try(
            f"load {dialect} {path} size={size} ({label})",
            lambda: measure(f"bench.load:{path}", env=child, size=size, jobs_file=str(jobs_file)),
        )
    finally:
        try:
            if dialect == "postgres":
                pg.drop_database(database)
            else:
                Path(database).unlink(missing_ok=True)
        except Exception as error:  # a database left behind must not end the whole run
            log(f"could not drop {database}: {error}")


def rss_rows(rows: list[dict[str, Any]], sizes: list[int]) -> list[dict[str, Any]]:
    """Flat memory: peak RSS at the largest size vs the size before it, and vs the baseline."""
    if len(sizes) < 2:
        return []
    small, large = sorted(sizes)[-2:]
    by = {(r["name"], r["size"]): r for r in rows}
    out = []
    for name in ("stage_s3", "load_postgres", "load_sqlite"):
        lo, hi = by.get((name, small)), by.get((name, large))
        if not lo or not hi or not lo.get("peak_rss_mb") or not hi.get("peak_rss_mb"):
            continue
        growth = hi["peak_rss_mb"] / lo["peak_rss_mb"]
        allowed = 1.5 * (1 if large <= 10 * small else large / (10 * small))
        out.append(
            row(
                f"{name}_rss_growth",
                large,
                f"x peak RSS at {small}",
                growth,
                baseline=(hi.get("baseline_peak_rss_mb") or 0) / (lo.get("baseline_peak_rss_mb") or 1)
                or None,
                peak_rss_mb=hi["peak_rss_mb"],
                target=f"<= {allowed:g}",
                met=growth <= allowed,
            )
        )
        if name == "stage_s3" and hi.get("baseline_peak_rss_mb"):
            share = hi["peak_rss_mb"] / hi["baseline_peak_rss_mb"]
            out.append(
                row(
                    "stage_s3_rss_vs_baseline",
                    large,
                    "x baseline peak RSS",
                    share,
                    peak_rss_mb=hi["peak_rss_mb"],
                    target="<= 0.1",
                    met=share <= 0.1,
                )
            )
    return out


def wait_rows(env: dict[str, str], tmp: Path) -> list[dict[str, Any]]:
    from bench.wait import stand_in_speed
    from scripts.local_env import aws_connection, create_bucket, local_aws

    speed = stand_in_speed(WAIT_JOB_HOURS, WAIT_SCALE)
    with local_aws(tmp / "aws-wait", speed=speed) as aws:
        create_bucket(aws.endpoint_url, BUCKET)
        child = {
            **env,
            ENDPOINT_ENV: aws.endpoint_url,
            "AIRFLOW_CONN_AWS_DEFAULT": aws_connection(aws.endpoint_url),
        }
        ours = _try(
            "wait project (deferrable sensor + trigger)",
            lambda: measure(
                "bench.wait:project",
                env=child,
                timeout=600,
                scale=WAIT_SCALE,
                poll_interval=POLL_INTERVAL_S,
                max_poll_interval=MAX_POLL_INTERVAL_S,
            ),
        )
        poke = _try(
            "wait baseline (provider sensor, poke mode)",
            lambda: measure("bench.wait:baseline", env=child, timeout=600, scale=WAIT_SCALE),
        )
    if isinstance(ours, str) or isinstance(poke, str):
        return [row("wait", None, "-", None, **_error(ours, poke))]
    o, p = ours.result, poke.result
    hours = o["job_seconds"] / 3600
    simulated = {
        "simulated": f"time compressed {WAIT_SCALE:g}x: a {hours:.2f} h job, intervals scaled alike",
    }
    latency_o = o["latency_seconds"] / o["interval_at_end"] if o["interval_at_end"] else None
    latency_p = p["latency_seconds"] / p["interval_at_end"] if p["interval_at_end"] else None
    return [
        row(
            "wait_worker_slot_seconds",
            None,
            "slot-seconds per job",
            o["slot_seconds"],
            baseline=p["slot_seconds"],
            target="about 0",
            met=o["slot_seconds"] < 5,
            job_seconds=o["job_seconds"],
            **simulated,
        ),
        row(
            "wait_calls_per_job_hour",
            None,
            "GetModelInvocationJob / job-hour",
            o["calls"] / hours,
            baseline=p["calls"] / (p["job_seconds"] / 3600),
            target="<= 20",
            met=o["calls"] / hours <= 20,
            calls=o["calls"],
            baseline_calls=p["calls"],
            **simulated,
        ),
        row(
            "wait_detection_latency",
            None,
            "poll intervals in force at the end",
            latency_o,
            baseline=latency_p,
            target="<= 2",
            met=latency_o is not None and latency_o <= 2,
            latency_seconds=o["latency_seconds"],
            baseline_latency_seconds=p["latency_seconds"],
            interval_at_end_seconds=o["interval_at_end"],
            configured_poll_interval=POLL_INTERVAL_S,
            configured_max_poll_interval=MAX_POLL_INTERVAL_S,
            **simulated,
        ),
    ]


def parse_rows(env: dict[str, str]) -> list[dict[str, Any]]:
    from bench.parse import dag_files, parse_file

    rows = []
    for path in dag_files():
        log(f"parse {path.name} (5 fresh interpreters)")
        try:
            result = parse_file(path, env=env)
        except (RuntimeError, OSError) as error:
            rows.append(row(f"dag_parse:{path.name}", None, "s", None, error=str(error)[:200]))
            continue
        rows.append(
            row(
                f"dag_parse:{path.name}",
                None,
                "s (median DagBag load)",
                result["seconds"],
                target="<= 0.5 and no heavy import at top level",
                met=result["seconds"] <= 0.5 and not result["heavy_imports"] and not result["import_errors"],
                samples=result["samples"],
                heavy_imports=result["heavy_imports"],
                import_errors=result["import_errors"],
            )
        )
    return rows


@contextlib.contextmanager
def _postgres() -> Generator[Any, None, None]:
    """The Postgres server, or the reason there is none (the Postgres rows then show it)."""
    from bench.postgres import postgres_server

    try:
        with postgres_server() as pg:
            yield pg
    except RuntimeError as error:
        yield f"no Postgres: {error}"


def main(argv: list[str] | None = None) -> int:
    from scripts.local_env import create_bucket, local_aws

    args = parse_args(argv)
    started = time.time()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-run-") as name:
        tmp = Path(name)
        env = base_env(tmp)
        if "stage" in args.only or "load" in args.only:
            with local_aws(tmp / "aws") as aws, _postgres() as pg:
                create_bucket(aws.endpoint_url, BUCKET)
                env[ENDPOINT_ENV] = aws.endpoint_url
                for size in args.sizes:
                    if "stage" in args.only:
                        rows += stage_rows(size, env)
                    if "load" in args.only:
                        rows += load_rows(size, env, pg, tmp)
            rows += rss_rows(rows, args.sizes)
        if "wait" in args.only:
            rows += wait_rows(env, tmp)
        if "parse" in args.only:
            rows += parse_rows(env)
    print(table(rows))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rows, indent=2) + "\n")
    meta = {
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "minutes": round((time.time() - started) / 60, 1),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "python": platform.python_version(),
        "machine": platform.platform(),
    }
    args.output.with_name(args.output.stem + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"\nwrote {args.output} ({len(rows)} rows) in {meta['minutes']} min", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
