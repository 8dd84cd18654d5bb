"""What the overhead baselines share: flags, the tickets, the messages and the output line.

Every baseline (``benchmarks.bare_client``, ``benchmarks.sdk_baseline``,
``benchmarks.aiohttp_baseline``) reads the same JSONL tickets, sends the same chat messages as the
pipeline and prints, as its last stdout line, one JSON object with ``sent``, ``ok``, ``failed``,
``wall_s`` and ``cpu_s`` (this process's CPU during the requests only). This module imports
neither Beam, nor ticketflow, nor an HTTP client, so it adds nothing to a baseline's start-up.

Example::

    parser = baseline_parser("python -m benchmarks.aiohttp_baseline", "A bare aiohttp loop.")
    args = parser.parse_args(argv)
    return run_and_report(args, lambda records: send(args, records))
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

#: The pipeline's default system prompt (``transforms.llm.DEFAULT_SYSTEM_PROMPT``), copied so
#: that a baseline run on its own sends the same bytes without importing ticketflow.
DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful, concise customer-support agent. Read the ticket and write the reply the "
    "support team should send: acknowledge the problem, give concrete next steps, stay polite.")


def messages_of(record: dict, system_prompt: str) -> list[dict[str, str]]:
    """The chat messages the pipeline sends for one ticket (see ``transforms.llm``)."""
    lines = [f"Ticket ID: {record['id']}"]
    if record.get("subject"):
        lines.append(f"Subject: {record['subject']}")
    messages = []
    if system_prompt:
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": "\n".join(lines) + "\n\n" + record["body"]})
    return messages


def baseline_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The flags every baseline takes (the same as ``benchmarks.bare_client``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--base_url", required=True, help="e.g. http://127.0.0.1:PORT/v1")
    parser.add_argument("--input", required=True, help="JSONL tickets")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--system_prompt", default=DEFAULT_SYSTEM_PROMPT)
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--max_tokens", type=int, default=256)
    return parser


def read_records(path: str) -> list[dict]:
    """The JSONL file's records (parsed before the clock starts, as the bare client does)."""
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


async def run_window(items: Iterable, concurrency: int,
                     one: Callable[[object], Awaitable[bool]]) -> tuple[int, int]:
    """Awaits ``one(item)`` for every item, ``concurrency`` at a time.

    One task per window slot pulls from a shared iterator, so memory stays flat for any count
    and a slow answer holds back only its own slot.

    Returns:
        (successful, failed) counts; ``one`` returns whether its item succeeded.
    """
    pending = iter(items)
    counts = [0, 0]

    async def worker() -> None:
        for item in pending:
            counts[0 if await one(item) else 1] += 1

    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return counts[0], counts[1]


def run_and_report(records: Sequence[dict],
                   send: Callable[[Sequence[dict]], Awaitable[tuple[int, int]]],
                   extra: dict | None = None) -> int:
    """Runs ``send(records)`` on a fresh event loop and prints the JSON result line.

    Returns:
        The exit code: 0 when every request succeeded, else 1.
    """
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok, failed = asyncio.run(send(records))
    line = {"sent": len(records), "ok": ok, "failed": failed,
            "wall_s": round(time.perf_counter() - wall0, 3),
            "cpu_s": round(time.process_time() - cpu0, 3), **(extra or {})}
    print(json.dumps(line), flush=True)
    return 0 if failed == 0 else 1
