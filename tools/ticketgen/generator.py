"""Deterministic synthetic customer-support tickets, for demos, tests and load runs: the logic.

Tickets are assembled from templates and slots (product areas, error codes, order numbers, names,
dates, stack traces...), so a million of them stay varied while the same ``seed`` always yields
the same tickets. Generation uses only the standard library; Parquet output needs ``pyarrow``.
The phrases live in the ``tables*`` modules, the slot values in :mod:`tools.ticketgen.slots`.

Each ticket is a plain dict::

    {"id": "T-000001", "subject": "...", "body": "...",
     "customer": {"name": "...", "email": "...", "plan": "free|pro|enterprise"},
     "priority": "low|normal|high|urgent", "channel": "email|chat|web|phone",
     "created_at": "2026-03-14T09:26:53Z", "tags": ["billing", "refund"], "language": "en"}

Usage::

    from tools.ticketgen import generate, write_jsonl

    for ticket in generate(10, seed=7):
        print(ticket["id"], ticket["subject"])
    write_jsonl("out/tickets.jsonl", 1_000_000, seed=1)

From a shell, see ``python -m tools.ticketgen --help``.
"""

from __future__ import annotations

import json
import os
import random
import time
import unicodedata
from bisect import bisect
from collections.abc import Iterator, Sequence
from itertools import accumulate
from typing import Any

from tools.ticketgen.slots import Rnd, Slots
from tools.ticketgen.tables import (
    ATTACHMENTS,
    CATEGORY_ORDER,
    COMPANIES,
    EN_CHAT_GREETINGS,
    EN_CLOSINGS,
    EN_COMPANY_SIGNOFFS,
    EN_GREETINGS,
    EN_SIGNOFFS,
    EN_TRIED,
    EN_URGENCY,
    FREE_DOMAINS,
    NAMES,
    PLAN_NAMES,
)
from tools.ticketgen.tables_customer import CUSTOMER_CATEGORIES
from tools.ticketgen.tables_foreign import FOREIGN
from tools.ticketgen.tables_product import PRODUCT_CATEGORIES

__all__ = [
    "CHANNELS",
    "LANGUAGES",
    "PARQUET_ROW_GROUP_SIZE",
    "PLANS",
    "PRIORITIES",
    "generate",
    "parquet_schema",
    "write_jsonl",
    "write_parquet",
]

PRIORITIES = ("low", "normal", "high", "urgent")
CHANNELS = ("email", "chat", "web", "phone")
PLANS = ("free", "pro", "enterprise")
LANGUAGES = ("en", "es", "fr", "de", "pt")

PARQUET_ROW_GROUP_SIZE = 50_000
_JSONL_FLUSH_LINES = 10_000

_YEAR_START = 1_767_225_600  # 2026-01-01T00:00:00Z
_YEAR_SECONDS = 365 * 86_400


def _cum(weights: Sequence[float]) -> list[float]:
    """Cumulative weights normalised to 1, for ``bisect`` against ``random()``."""
    total = float(sum(weights))
    return [w / total for w in accumulate(weights)]


def _ascii(text: str) -> str:
    """Lower-case ASCII form of a name, for e-mail addresses (``Müller`` -> ``muller``)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


# --------------------------------------------------------------------------------------------
# Tables derived from the phrase tables once, at import.
# --------------------------------------------------------------------------------------------

_COMPANY_DOMAINS = tuple(
    _ascii(c.replace(" GmbH", "").replace(" SARL", "").replace(" SL", "")) + (
        ".de" if c.endswith("GmbH") else ".fr" if c.endswith("SARL")
        else ".es" if c.endswith(" SL") else ".com")
    for c in COMPANIES
)
# The two themed halves merged back in the draw order: the order of the categories decides
# which random draw picks which one. tests/test_tickets_generator.py checks that CATEGORY_ORDER
# names every category of both halves exactly once.
_BY_NAME = {**CUSTOMER_CATEGORIES, **PRODUCT_CATEGORIES}
_CATEGORIES = {name: _BY_NAME[name] for name in CATEGORY_ORDER}

# --------------------------------------------------------------------------------------------
# Distributions (weights follow the order of the tuples they index).
# --------------------------------------------------------------------------------------------

_CAT_CUM = _cum([c["weight"] for c in _CATEGORIES.values()])
_FOREIGN_SHARE = sum(lang["weight"] for lang in FOREIGN.values()) / 100  # about 5%
_FOREIGN_CUM = _cum([lang["weight"] for lang in FOREIGN.values()])
_CHANNEL_CUM = _cum((45, 22, 25, 8))
_PLAN_CUM = _cum((50, 38, 12))
_TAG_COUNT_CUM = _cum((20, 35, 30, 15))
_DETAIL_COUNT_CUM = _cum((30, 35, 22, 13))  # 1..4 detail sentences
_BASE_PRIORITY_CUM = _cum((15, 60, 18, 7))
_GENERIC_TAGS = ("needs-triage", "follow-up", "repeat-contact", "mobile", "vip")

# Precomputed per category: (priority cum, tags, scenarios, details, attachment probability,
# attachments, may say what was tried, may say how urgent, closings), so the hot loop does tuple
# indexing instead of dict lookups.
_CAT_TABLE = tuple(
    (_cum(c["priority"]), c["tags"] + _GENERIC_TAGS, c["scenarios"], c["details"],
     c.get("attachment", (0.0, "ui"))[0], ATTACHMENTS[c.get("attachment", (0.0, "ui"))[1]],
     c.get("tried", False), c.get("urgency", True), c.get("closings", EN_CLOSINGS))
    for c in _CATEGORIES.values()
)
_FOREIGN_TABLE = tuple(
    (code, lang, tuple(lang["topics"].items())) for code, lang in FOREIGN.items()
)
_NAME_TABLE = {
    lang: (firsts, lasts, tuple(_ascii(f) for f in firsts), tuple(_ascii(s) for s in lasts))
    for lang, (firsts, lasts) in NAMES.items()
}


def _pick(rnd: Rnd, seq: Sequence[Any]) -> Any:
    return seq[int(rnd() * len(seq))]


def _distinct(rnd: Rnd, seq: Sequence[str], k: int) -> list[str]:
    """``k`` distinct items of ``seq`` (``k`` is small next to ``len(seq)``)."""
    k = min(k, len(seq))
    if k <= 0:
        return []
    picked: list[str] = []
    n = len(seq)
    while len(picked) < k:
        item = seq[int(rnd() * n)]
        if item not in picked:
            picked.append(item)
    return picked


def _customer(rnd: Rnd, language: str) -> tuple[dict[str, str], dict[str, str]]:
    """A customer and the slots that refer to them (name, company, plan...)."""
    firsts, lasts, firsts_a, lasts_a = _NAME_TABLE[language]
    i = int(rnd() * len(firsts))
    j = int(rnd() * len(lasts))
    first, last, fa, la = firsts[i], lasts[j], firsts_a[i], lasts_a[j]
    plan = PLANS[bisect(_PLAN_CUM, rnd())]
    c = int(rnd() * len(COMPANIES))
    company = COMPANIES[c]
    if plan == "free" and rnd() < 0.85:
        domain = _pick(rnd, FREE_DOMAINS[language])
        workspace = f"{la}-{fa}"
    else:
        domain = _COMPANY_DOMAINS[c]
        workspace = domain.split(".", 1)[0]
    style = rnd()
    if style < 0.45:
        local = f"{fa}.{la}"
    elif style < 0.65:
        local = f"{fa[0]}{la}"
    elif style < 0.85:
        local = f"{fa}{int(rnd() * 100):02d}"
    else:
        local = f"{fa}_{la}{int(rnd() * 1000)}"
    name = f"{first} {last}"
    email = f"{local}@{domain}"
    customer = {"name": name, "email": email, "plan": plan}
    slots = {"first": first, "name": name, "email": email, "plan_name": PLAN_NAMES[plan],
             "company": company, "workspace": workspace}
    return customer, slots


def _english(rnd: Rnd, slots: Slots, channel: str,
             plan: str) -> tuple[str, str, list[float], tuple[str, ...]]:
    """Subject, body, priority weights and tag pool of an English ticket."""
    (priority_cum, tag_pool, scenarios, general, attach_p, attachments, tried, urgency,
     closings) = _CAT_TABLE[bisect(_CAT_CUM, rnd())]
    subjects, intros, specific = _pick(rnd, scenarios)
    sentences = [_pick(rnd, intros)]
    # Details that fit the scenario come first; general ones of the category may follow.
    n_details = 1 + bisect(_DETAIL_COUNT_CUM, rnd())
    n_specific = min(len(specific), 1 + int(rnd() * n_details))
    sentences += _distinct(rnd, specific, n_specific)
    sentences += _distinct(rnd, general, n_details - n_specific)
    if tried and rnd() < 0.3:
        sentences.append(_pick(rnd, EN_TRIED))
    if urgency and rnd() < 0.25:
        sentences.append(_pick(rnd, EN_URGENCY))
    if rnd() < 0.7:
        sentences.append(_pick(rnd, closings))
    text = " ".join(sentences)
    if len(sentences) > 4 and rnd() < 0.5:
        # Longer messages are often written in two paragraphs.
        cut = 2 + int(rnd() * (len(sentences) - 3))
        text = " ".join(sentences[:cut]) + "\n\n" + " ".join(sentences[cut:])
    parts = []
    if channel == "phone":
        parts.append("[Voicemail transcript]")
    elif channel == "chat":
        if rnd() < 0.5:
            parts.append(_pick(rnd, EN_CHAT_GREETINGS))
    elif rnd() < 0.8:
        parts.append(_pick(rnd, EN_GREETINGS))
    parts.append(text)
    if attach_p and rnd() < attach_p:
        parts.append(_pick(rnd, attachments))
    if channel in ("email", "web") and rnd() < 0.75:
        signoffs = EN_COMPANY_SIGNOFFS if plan != "free" and rnd() < 0.4 else EN_SIGNOFFS
        parts.append(_pick(rnd, signoffs))
    subject = _pick(rnd, subjects)
    body = "\n\n".join(parts).format_map(slots)
    return subject.format_map(slots), body, priority_cum, tag_pool


def _foreign(rnd: Rnd, slots: Slots, lang: dict[str, Any], topics: tuple,
             channel: str) -> tuple[str, str, str]:
    """Subject, body and topic of a non-English ticket."""
    topic, (subjects, intros, details) = _pick(rnd, topics)
    i = int(rnd() * len(intros))
    sentences = [intros[i]]
    sentences += _distinct(rnd, details, 1 + bisect(_DETAIL_COUNT_CUM, rnd()))
    if rnd() < 0.7:
        sentences.append(_pick(rnd, lang["closings"]))
    parts = []
    if channel != "phone" and rnd() < 0.8:
        parts.append(_pick(rnd, lang["greetings"]))
    parts.append(" ".join(sentences))
    if channel in ("email", "web") and rnd() < 0.75:
        parts.append(_pick(rnd, lang["signoffs"]))
    subject = subjects[i].format_map(slots)
    return subject, "\n\n".join(parts).format_map(slots), topic


def generate(count: int, seed: int = 0, start: int = 1) -> Iterator[dict[str, Any]]:
    """Yield ``count`` synthetic support tickets, the same ones for the same ``seed``.

    Tickets are produced lazily, so any count can be streamed in constant memory. Only
    ``random.Random(seed).random()`` is drawn from, which keeps the output stable across Python
    versions. ``generate(n, seed)`` is a prefix of ``generate(m, seed)`` for ``n <= m``.

    Args:
        count: How many tickets to yield (0 or more).
        seed: Seed of the random stream; it alone decides the tickets' content.
        start: Number of the first ticket; ids are ``T-`` and the number zero-padded to at least
            six digits. It only shifts the ids: to build disjoint shards, vary both ``seed`` and
            ``start``.

    Yields:
        Ticket dicts with the keys ``id``, ``subject``, ``body``, ``customer`` (``name``,
        ``email``, ``plan``), ``priority``, ``channel``, ``created_at``, ``tags`` and
        ``language``, in that order.

    Raises:
        ValueError: If ``count`` is negative or ``start`` is below 0.
    """
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if start < 0:
        raise ValueError(f"start must be >= 0, got {start}")
    rnd = random.Random(seed).random
    gmtime = time.gmtime
    strftime = time.strftime
    for number in range(start, start + count):
        ts = _YEAR_START + int(rnd() * _YEAR_SECONDS)
        created_at = strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(ts))
        channel = CHANNELS[bisect(_CHANNEL_CUM, rnd())]
        if rnd() < _FOREIGN_SHARE:
            code, lang, topics = _FOREIGN_TABLE[bisect(_FOREIGN_CUM, rnd())]
            customer, preset = _customer(rnd, code)
            slots = Slots(rnd, _ts=ts, created_at=created_at, **preset)
            subject, body, category = _foreign(rnd, slots, lang, topics, channel)
            priority_cum = _BASE_PRIORITY_CUM
            tag_pool = (category.replace("_", "-"), "translation-needed") + _GENERIC_TAGS
        else:
            code = "en"
            customer, preset = _customer(rnd, code)
            slots = Slots(rnd, _ts=ts, created_at=created_at, **preset)
            subject, body, priority_cum, tag_pool = _english(rnd, slots, channel,
                                                             customer["plan"])
        priority = PRIORITIES[bisect(priority_cum, rnd())]
        if priority == "urgent" and code == "en" and rnd() < 0.3:
            subject = "URGENT: " + subject
        elif rnd() < 0.04:
            subject = "Re: " + subject
        n_tags = bisect(_TAG_COUNT_CUM, rnd())
        if n_tags:
            # The category's own tag comes first most of the time, as a triage rule would add it.
            tags = [tag_pool[0]] if rnd() < 0.8 else []
            for tag in _distinct(rnd, tag_pool, n_tags + 1):
                if len(tags) == n_tags:
                    break
                if tag not in tags:
                    tags.append(tag)
        else:
            tags = []
        yield {
            "id": f"T-{number:06d}",
            "subject": subject,
            "body": body,
            "customer": customer,
            "priority": priority,
            "channel": channel,
            "created_at": created_at,
            "tags": tags,
            "language": code,
        }


def parquet_schema() -> Any:
    """The Arrow schema of tickets in Parquet files (``customer`` struct, ``tags`` list).

    Returns:
        A ``pyarrow.Schema``.
    """
    import pyarrow as pa

    return pa.schema([
        pa.field("id", pa.string(), nullable=False),
        pa.field("subject", pa.string(), nullable=False),
        pa.field("body", pa.string(), nullable=False),
        pa.field("customer", pa.struct([
            pa.field("name", pa.string(), nullable=False),
            pa.field("email", pa.string(), nullable=False),
            pa.field("plan", pa.string(), nullable=False),
        ]), nullable=False),
        pa.field("priority", pa.string(), nullable=False),
        pa.field("channel", pa.string(), nullable=False),
        pa.field("created_at", pa.string(), nullable=False),
        pa.field("tags", pa.list_(pa.string()), nullable=False),
        pa.field("language", pa.string(), nullable=False),
    ])


def _make_parent(path: str | os.PathLike[str]) -> None:
    parent = os.path.dirname(os.fspath(path))
    if parent:
        os.makedirs(parent, exist_ok=True)


def write_jsonl(path: str | os.PathLike[str], count: int, seed: int = 0, start: int = 1) -> int:
    """Write tickets as JSON Lines (UTF-8, one ticket per line), streaming.

    Lines are buffered a few thousand at a time, so memory stays flat for any ``count``.

    Args:
        path: Output file; missing parent directories are created.
        count: Number of tickets.
        seed: Seed passed to :func:`generate`.
        start: Number of the first ticket id.

    Returns:
        The number of tickets written.

    Raises:
        ValueError: If ``count`` or ``start`` is negative.
    """
    tickets = generate(count, seed, start)  # validates before the file is created
    _make_parent(path)
    dumps = json.dumps
    written = 0
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        buffer: list[str] = []
        for ticket in tickets:
            buffer.append(dumps(ticket, ensure_ascii=False))
            if len(buffer) == _JSONL_FLUSH_LINES:
                out.write("\n".join(buffer) + "\n")
                written += len(buffer)
                buffer.clear()
        if buffer:
            out.write("\n".join(buffer) + "\n")
            written += len(buffer)
    return written


def write_parquet(path: str | os.PathLike[str], count: int, seed: int = 0, start: int = 1,
                  row_group_size: int = PARQUET_ROW_GROUP_SIZE) -> int:
    """Write tickets to a Parquet file, one row group per ``row_group_size`` tickets.

    Only one row group is held in memory at a time.

    Args:
        path: Output file; missing parent directories are created.
        count: Number of tickets.
        seed: Seed passed to :func:`generate`.
        start: Number of the first ticket id.
        row_group_size: Tickets per row group.

    Returns:
        The number of tickets written.

    Raises:
        ValueError: If ``count`` or ``start`` is negative, or ``row_group_size`` is below 1.
        ImportError: If ``pyarrow`` is not installed.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    if row_group_size < 1:
        raise ValueError(f"row_group_size must be >= 1, got {row_group_size}")
    tickets = generate(count, seed, start)
    schema = parquet_schema()
    _make_parent(path)
    written = 0
    with pq.ParquetWriter(os.fspath(path), schema) as writer:
        batch: list[dict[str, Any]] = []
        for ticket in tickets:
            batch.append(ticket)
            if len(batch) == row_group_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                written += len(batch)
                batch.clear()
        if batch or not written:
            # An empty table still gives a readable file with the schema.
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            written += len(batch)
    return written
