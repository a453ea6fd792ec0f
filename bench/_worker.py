"""Runs one measurement in a fresh process: ``python -m bench._worker MODULE:FUNCTION JSON_KWARGS OUT``.

The parent reads this process's peak RSS from ``os.wait4``; the result goes to the file ``OUT``.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys


def main(argv: list[str]) -> int:
    target, kwargs, out = argv
    logging.basicConfig(level=logging.WARNING)
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)(**json.loads(kwargs))
    with open(out, "w", encoding="utf-8") as handle:
        json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
