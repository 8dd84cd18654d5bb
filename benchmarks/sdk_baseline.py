"""The SDK baseline of the overhead benchmark: the ``openai`` client alone, no Beam, no ticketflow.

``AsyncOpenAI`` (``max_retries=0``, ``--concurrency`` + 8 connections, as the pipeline) sends the
pipeline's messages, ``--concurrency`` requests in flight, through ``with_raw_response`` (the
pipeline needs the headers: request id, rate-limit budget). What it does with each answer is a
flag, so that each layer's cost can be measured on its own, side by side:

* ``--answer raw`` (default, the cheapest realistic use): ``json.loads`` of the body, then read
  the content, the usage and the ``x-request-id`` header from the dict — no pydantic model.
* ``--answer parsed``: ``raw.parse()`` into the SDK's pydantic ``ChatCompletion``, then the same
  reads from the model — exactly what ``transforms/llm.py`` does today.

``--transport aiohttp`` (default) is the SDK's ``DefaultAioHttpClient`` (``openai[aiohttp]``);
``--transport httpx`` its default httpx transport, as ``benchmarks.bare_client``.

``--call post`` skips ``chat.completions.create`` and its per-call transformation of the
parameters (a walk of the typed-dict annotations of every message): the body is encoded once
with ``json.dumps`` and sent with the client's low-level ``post(..., content=...)``, still
through the SDK's headers, options and transport. It implies ``--answer raw``::

    python -m benchmarks.sdk_baseline --base_url http://127.0.0.1:PORT/v1 --input t.jsonl \
        --concurrency 32 [--transport httpx] [--answer parsed] [--call post]

The last stdout line is JSON: ``sent``, ``ok``, ``failed``, ``wall_s``, ``cpu_s``, plus
``transport`` and ``answer`` (see ``benchmarks.baseline_common``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import httpx2
import openai

from benchmarks.baseline_common import (
    baseline_parser,
    messages_of,
    read_records,
    run_and_report,
    run_window,
)

TRANSPORTS = ("aiohttp", "httpx")
ANSWERS = ("raw", "parsed")
CALLS = ("create", "post")


def make_client(base_url: str, concurrency: int, transport: str) -> openai.AsyncOpenAI:
    """The client the pipeline would build, on the chosen HTTP transport."""
    limits = openai.DEFAULT_CONNECTION_LIMITS.__class__(
        max_connections=concurrency + 8, max_keepalive_connections=concurrency + 8)
    http_class = (openai.DefaultAioHttpClient if transport == "aiohttp"
                  else openai.DefaultAsyncHttpxClient)
    return openai.AsyncOpenAI(api_key="bench", base_url=base_url, max_retries=0,
                              http_client=http_class(limits=limits))


def read_answer(raw, answer: str) -> tuple[str, int, int, str | None]:
    """(content, prompt tokens, completion tokens, request id) of one raw response.

    Raises:
        ValueError: when the answer has no choice.
    """
    request_id = raw.headers.get("x-request-id")
    if answer == "parsed":
        completion = raw.parse()
        if not completion.choices or completion.choices[0].message is None:
            raise ValueError("response has no choices")
        usage = completion.usage
        return (completion.choices[0].message.content or "",
                usage.prompt_tokens if usage else 0, usage.completion_tokens if usage else 0,
                request_id)
    body = json.loads(raw.content)
    choices = body.get("choices")
    if not choices:
        raise ValueError("response has no choices")
    usage = body.get("usage") or {}
    return ((choices[0].get("message") or {}).get("content") or "",
            usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), request_id)


async def send_all(base_url: str, records: Sequence[dict], concurrency: int, system_prompt: str,
                   model: str, max_tokens: int, transport: str = "aiohttp",
                   answer: str = "raw", call: str = "create") -> tuple[int, int]:
    """Sends one request per record, ``concurrency`` at a time.

    Returns:
        (successful, failed) request counts.
    """
    client = make_client(base_url, concurrency, transport)
    create = client.chat.completions.with_raw_response.create
    options = {"headers": {"Content-Type": "application/json"}}

    async def send(record: dict):
        messages = messages_of(record, system_prompt)
        if call == "post":
            body = json.dumps({"model": model, "messages": messages, "max_tokens": max_tokens})
            return await client.post("/chat/completions", cast_to=httpx2.Response,
                                     content=body.encode(), options=options)
        return await create(model=model, messages=messages, max_tokens=max_tokens)

    async def one(record: dict) -> bool:
        try:
            raw = await send(record)
            read_answer(raw, "raw" if call == "post" else answer)
        except (openai.OpenAIError, ValueError):
            return False
        return True

    try:
        return await run_window(records, concurrency, one)
    finally:
        await client.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; prints one JSON line."""
    parser = baseline_parser("python -m benchmarks.sdk_baseline", __doc__.splitlines()[0])
    parser.add_argument("--transport", choices=TRANSPORTS, default="aiohttp")
    parser.add_argument("--answer", choices=ANSWERS, default="raw")
    parser.add_argument("--call", choices=CALLS, default="create")
    args = parser.parse_args(argv)
    if args.call == "post" and args.answer != "raw":
        parser.error("--call post reads raw answers only")
    records = read_records(args.input)
    return run_and_report(
        records, lambda recs: send_all(args.base_url, recs, args.concurrency, args.system_prompt,
                                       args.model, args.max_tokens, args.transport, args.answer,
                                       args.call),
        extra={"transport": args.transport, "answer": args.answer, "call": args.call})


if __name__ == "__main__":
    sys.exit(main())
