"""Synthetic customer-support tickets, deterministic for a seed: for demos, tests and load runs.

A development tool, not part of the pipeline: it is not packaged for workers. Run it from the
repository root. ``generator`` holds the logic, ``slots`` the template slot values, the
``tables*`` modules the phrases, ``__main__`` the command line.

    from tools.ticketgen import generate, write_jsonl, write_parquet

    first = next(generate(1, seed=7))
    write_parquet("/tmp/tickets.parquet", 100_000, seed=1)

    python -m tools.ticketgen --count 300 --seed 7 --out examples/tickets.jsonl
"""

from tools.ticketgen.generator import (
    CHANNELS,
    LANGUAGES,
    PLANS,
    PRIORITIES,
    generate,
    write_jsonl,
    write_parquet,
)

__all__ = [
    "CHANNELS",
    "LANGUAGES",
    "PLANS",
    "PRIORITIES",
    "generate",
    "write_jsonl",
    "write_parquet",
]
