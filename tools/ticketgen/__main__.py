"""Command line of the ticket generator: write ``--count`` tickets to a .jsonl or .parquet file.

The format follows the extension of ``--out``; the content depends only on ``--count``,
``--seed`` and ``--start``. Run it from the repository root (``tools`` is not installed)::

    python -m tools.ticketgen --count 300 --seed 7 --out examples/tickets.jsonl
    python -m tools.ticketgen --count 1000000 --seed 1 --out /tmp/tickets.parquet
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from tools.ticketgen.generator import write_jsonl, write_parquet

_WRITERS = {".jsonl": write_jsonl, ".parquet": write_parquet}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write ``--count`` tickets to ``--out``.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code (0 on success; argparse exits with 2 on bad flags).
    """
    parser = argparse.ArgumentParser(
        prog="python -m tools.ticketgen",
        description="Write deterministic synthetic support tickets to a .jsonl or .parquet file.")
    parser.add_argument("--count", type=int, required=True, help="number of tickets")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--start", type=int, default=1, help="number of the first id (default 1)")
    parser.add_argument("--out", required=True, help="output file ending in .jsonl or .parquet")
    args = parser.parse_args(argv)
    ext = os.path.splitext(args.out)[1].lower()
    if ext not in _WRITERS:
        parser.error(f"--out must end in .jsonl or .parquet, got {args.out!r}")
    if args.count < 0 or args.start < 0:
        parser.error("--count and --start must be >= 0")
    began = time.perf_counter()
    written = _WRITERS[ext](args.out, args.count, args.seed, args.start)
    elapsed = time.perf_counter() - began
    rate = written / elapsed if elapsed > 0 else float("inf")
    print(f"wrote {written} tickets to {args.out} in {elapsed:.2f}s ({rate:,.0f}/s)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
