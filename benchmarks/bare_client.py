"""The baseline of the overhead benchmark: the same requests from a bare asyncio client, no Beam.

It reads the same JSONL tickets, builds the same chat messages as the pipeline (system prompt,
then ``Ticket ID`` / ``Subject`` / body), and sends them with the ``openai`` ``AsyncOpenAI``
client (``max_retries=0``, the same connection limits) keeping ``--concurrency`` requests in
flight. It imports neither Beam nor ticketflow, so its start-up is only Python and ``openai``:

    python -m benchmarks.bare_client --base_url http://127.0.0.1:PORT/v1 --input t.jsonl \
        --concurrency 32 --system_prompt "..."

The last stdout line is JSON: ``sent``, ``ok``, ``failed``, ``wall_s`` and ``cpu_s`` (this
process's CPU during the requests only). ``benchmarks.run`` measures its whole CPU from outside
instead, the same way as the pipeline's, so both pay the same accounting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence

import openai


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


async def send_all(base_url: str, records: list[dict], concurrency: int, system_prompt: str,
                   model: str, max_tokens: int) -> tuple[int, int]:
    """Sends one request per record, ``concurrency`` at a time.

    Returns:
        (successful, failed) request counts.
    """
    limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(
        max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    client = openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0,
                                http_client=openai.DefaultAsyncHttpxClient(limits=limits))
    semaphore = asyncio.Semaphore(concurrency)
    counts = [0, 0]

    async def one(record: dict) -> None:
        async with semaphore:
            try:
                completion = await client.chat.completions.create(
                    model=model, messages=messages_of(record, system_prompt),
                    max_tokens=max_tokens)
                ok = bool(completion.choices)
            except openai.OpenAIError:
                ok = False
            counts[0 if ok else 1] += 1

    # One task per window slot pulling from a shared iterator: memory stays flat for any count.
    pending = iter(records)

    async def worker() -> None:
        for record in pending:
            await one(record)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return counts[0], counts[1]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bare_client",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--base_url", required=True)
    parser.add_argument("--input", required=True, help="JSONL tickets")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--system_prompt", default="")
    parser.add_argument("--model", default="gpt-4o-mini")
    parser.add_argument("--max_tokens", type=int, default=256)
    args = parser.parse_args(argv)
    with open(args.input, encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    ok, failed = asyncio.run(send_all(args.base_url, records, args.concurrency,
                                      args.system_prompt, args.model, args.max_tokens))
    print(json.dumps({"sent": len(records), "ok": ok, "failed": failed,
                      "wall_s": round(time.perf_counter() - wall0, 3),
                      "cpu_s": round(time.process_time() - cpu0, 3)}))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
