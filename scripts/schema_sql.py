"""`make schema-sql PIPELINE=<name> [AFTER=<version>]`: print the SQL that creates a pipeline's tables.

For a warehouse where the pipeline's user may not CREATE in the schema: a DBA runs the printed
script (one transaction; it records each version it applies), and the pipeline's first run finds
its tables there and creates nothing. ``--after N`` prints only the versions past N (an upgrade that
brings a new migration file).
"""

from __future__ import annotations

import argparse
import sys

from bedrock_batch.config import PIPELINES_DIR, load_pipeline
from bedrock_batch.errors import ConfigError
from bedrock_batch.warehouse import schema_script


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make schema-sql", description=__doc__)
    parser.add_argument("pipeline", help=f"a pipeline name (a file in {PIPELINES_DIR})")
    parser.add_argument("--after", type=int, default=0, help="print only the versions past this one")
    args = parser.parse_args(argv)
    try:
        config = load_pipeline(PIPELINES_DIR / f"{args.pipeline}.yaml")
        sys.stdout.write(schema_script(config.warehouse.tables(), after=args.after))
    except ConfigError as err:
        print(f"schema-sql: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
