"""``python -m local_aws --host 127.0.0.1 --port 4566 [--state-dir DIR] [--speed X] [--seed N]``."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from local_aws.quotas import GB, Quotas
from local_aws.settings import Settings


def parse_args(argv: list[str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m local_aws", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--state-dir", type=Path, default=None, help="persist jobs here (JSON)")
    parser.add_argument("--speed", type=float, default=1.0, help="divides every simulated duration")
    parser.add_argument("--seed", type=int, default=0, help="seeds shuffles and injected faults")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--runtime-rps", type=float, default=None, help="bedrock-runtime throttle rate")
    defaults = Quotas()
    parser.add_argument("--min-records-per-job", type=int, default=defaults.min_records_per_job)
    parser.add_argument("--max-records-per-file", type=int, default=defaults.max_records_per_file)
    parser.add_argument("--max-records-per-job", type=int, default=defaults.max_records_per_job)
    parser.add_argument("--max-file-bytes", type=int, default=defaults.max_file_bytes, help=f"1 GB = {GB}")
    parser.add_argument("--max-job-bytes", type=int, default=defaults.max_job_bytes)
    parser.add_argument("--max-concurrent-jobs", type=int, default=defaults.max_concurrent_jobs)
    args = parser.parse_args(argv)
    if args.speed <= 0:
        parser.error("--speed must be positive")
    quotas = Quotas(
        min_records_per_job=args.min_records_per_job,
        max_records_per_file=args.max_records_per_file,
        max_records_per_job=args.max_records_per_job,
        max_file_bytes=args.max_file_bytes,
        max_job_bytes=args.max_job_bytes,
        max_concurrent_jobs=args.max_concurrent_jobs,
    )
    return Settings(
        host=args.host,
        port=args.port,
        state_dir=args.state_dir,
        speed=args.speed,
        seed=args.seed,
        region=args.region,
        runtime_rps=args.runtime_rps,
        quotas=quotas,
    )


#: moto spools an S3 object to a temporary file past this size (5 MB by default, so every 8 MiB part
#: of a staging run went to disk and back). Held in memory, uploads run ~1.6x faster here. Only in
#: force when s3_speedups cannot install its ObjectValue (then moto's own spooled files are used).
S3_KEY_BUFFER_BYTES = 1 << 30


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(S3_KEY_BUFFER_BYTES))
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    from local_aws import s3_speedups
    from local_aws.server import LocalAws

    s3_speedups.install()
    settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = LocalAws(settings)
    try:
        run_simple(settings.host, settings.port, app, threaded=True, request_handler=MotoRequestHandler)
    finally:
        app.close()


if __name__ == "__main__":
    main()
