"""The floor of the overhead benchmark: a bare aiohttp loop, no SDK, no Beam.

It posts the same JSON body the pipeline sends (``json.dumps`` of model, messages, max_tokens) to
``/chat/completions``, reads the answer with ``json.loads`` and checks it has a choice, keeping
``--concurrency`` requests in flight over one ``aiohttp`` session. Nothing else: no pydantic, no
retries, no headers read. What an HTTP client cannot do more cheaply in Python, give or take:

    python -m benchmarks.aiohttp_baseline --base_url http://127.0.0.1:PORT/v1 --input t.jsonl \
        --concurrency 32

The last stdout line is JSON: ``sent``, ``ok``, ``failed``, ``wall_s``, ``cpu_s``
(see ``benchmarks.baseline_common``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import aiohttp

from benchmarks.baseline_common import (
    baseline_parser,
    messages_of,
    read_records,
    run_and_report,
    run_window,
)


async def send_all(base_url: str, records: Sequence[dict], concurrency: int, system_prompt: str,
                   model: str, max_tokens: int) -> tuple[int, int]:
    """Posts one request per record, ``concurrency`` at a time.

    Returns:
        (successful, failed) request counts.
    """
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer bench"}
    connector = aiohttp.TCPConnector(limit=concurrency + 8)

    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(record: dict) -> bool:
            body = json.dumps({"model": model, "messages": messages_of(record, system_prompt),
                               "max_tokens": max_tokens})
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    payload = await response.read()
                    if response.status != 200:
                        return False
            except aiohttp.ClientError:
                return False
            return bool(json.loads(payload).get("choices"))

        return await run_window(records, concurrency, one)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints one JSON line."""
    parser = baseline_parser("python -m benchmarks.aiohttp_baseline", __doc__.splitlines()[0])
    args = parser.parse_args(argv)
    records = read_records(args.input)
    return run_and_report(records, lambda recs: send_all(
        args.base_url, recs, args.concurrency, args.system_prompt, args.model, args.max_tokens))


if __name__ == "__main__":
    sys.exit(main())
