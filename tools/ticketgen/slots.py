"""Slot values of the ticket templates (``{order}``, ``{date}``, ``{request_id}``...), made on use.

Slots are filled lazily, once per ticket, so a ticket that mentions its order number in the
subject and the body quotes the same number, and unused slots cost nothing. Each maker draws from
the ticket's random stream only when its slot is first used: the number of draws a maker takes is
part of the output, so changing it changes the tickets of every seed.

    import random

    slots = Slots(random.Random(1).random, _ts=1_767_225_600, workspace="acme")
    print("Order {order} of {date}, see {url}".format_map(slots))
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tools.ticketgen.tables import ERROR_BODIES, MONTHS, POOLS, SETUPS

__all__ = ["SLOT_MAKERS", "Rnd", "Slots"]

Rnd = Callable[[], float]
"""A source of floats in [0, 1): ``random.Random(seed).random``."""


def _pool_maker(values: tuple[str, ...]) -> Callable[[Rnd, dict], str]:
    def make(rnd: Rnd, slots: dict) -> str:
        return values[int(rnd() * len(values))]
    return make


def _int_maker(low: int, high: int, fmt: str = "{}") -> Callable[[Rnd, dict], str]:
    span = high - low + 1

    def make(rnd: Rnd, slots: dict) -> str:
        return fmt.format(low + int(rnd() * span))
    return make


def _days_before(rnd: Rnd, slots: dict) -> time.struct_time:
    # Dates mentioned in a ticket lie before the ticket itself, up to three weeks back.
    return time.gmtime(slots["_ts"] - (1 + int(rnd() * 21)) * 86_400)


def _make_browser(rnd: Rnd, slots: dict) -> str:
    browser, slots["os"] = SETUPS[int(rnd() * len(SETUPS))]
    return browser


def _make_os(rnd: Rnd, slots: dict) -> str:
    slots["browser"], os_name = SETUPS[int(rnd() * len(SETUPS))]
    return os_name


def _make_date(rnd: Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{MONTHS[t.tm_mon - 1]} {t.tm_mday}"


def _make_dnum(rnd: Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{t.tm_mday:02d}/{t.tm_mon:02d}"


def _make_dnum_de(rnd: Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{t.tm_mday}.{t.tm_mon}."


def _make_order(rnd: Rnd, slots: dict) -> str:
    if rnd() < 0.5:
        return f"#{100_000 + int(rnd() * 900_000)}"
    return f"ORD-2026-{int(rnd() * 100_000):05d}"


def _make_amount(rnd: Rnd, slots: dict) -> str:
    return f"${9 + int(rnd() * 2400):,}.{int(rnd() * 100):02d}"


def _make_amount_eur(rnd: Rnd, slots: dict) -> str:
    return f"{9 + int(rnd() * 900)},{int(rnd() * 100):02d} €"


def _make_hex(digits: int) -> Callable[[Rnd, dict], str]:
    scale = 16 ** digits

    def make(rnd: Rnd, slots: dict) -> str:
        return f"{int(rnd() * scale):0{digits}x}"
    return make


def _make_request_id(rnd: Rnd, slots: dict) -> str:
    return f"req_{int(rnd() * 16 ** 12):012x}{int(rnd() * 16 ** 8):08x}"


def _make_tracking(rnd: Rnd, slots: dict) -> str:
    return f"1Z{int(rnd() * 16 ** 6):06X}{int(rnd() * 10 ** 10):010d}"


def _make_url(rnd: Rnd, slots: dict) -> str:
    path = POOLS["url_path"][int(rnd() * len(POOLS["url_path"]))]
    if rnd() < 0.4:
        path += f"/{1000 + int(rnd() * 90_000)}"
    return f"https://{slots['workspace']}.nimbusdesk.com{path}"


def _make_docs_url(rnd: Rnd, slots: dict) -> str:
    return f"https://developers.nimbusdesk.com/reference{slots['endpoint']}"


def _make_version(rnd: Rnd, slots: dict) -> str:
    return f"{3 + int(rnd() * 2)}.{int(rnd() * 20)}.{int(rnd() * 10)}"


def _make_time(rnd: Rnd, slots: dict) -> str:
    return f"{7 + int(rnd() * 12)}:{int(rnd() * 60):02d} UTC"


def _make_http_status(rnd: Rnd, slots: dict) -> str:
    return slots["http_error"].split(" ", 1)[0]


def _make_error_json(rnd: Rnd, slots: dict) -> str:
    code, message = ERROR_BODIES[int(rnd() * len(ERROR_BODIES))]
    return json.dumps({"error": {"code": code, "message": message,
                                 "request_id": slots["request_id"]}})


def _make_paid_plan(rnd: Rnd, slots: dict) -> str:
    # Billing complaints from free accounts are about the plan they were upgraded to.
    return "Pro" if slots["plan_name"] == "Free" else slots["plan_name"]


def _make_vat(rnd: Rnd, slots: dict) -> str:
    prefix = ("DE", "FR", "IE", "NL", "GB", "ES")[int(rnd() * 6)]
    return f"{prefix}{int(rnd() * 10 ** 9):09d}"


SLOT_MAKERS: dict[str, Callable[[Rnd, dict], str]] = {
    **{name: _pool_maker(values) for name, values in POOLS.items()},
    "browser": _make_browser,
    "os": _make_os,
    "date": _make_date,
    "dnum": _make_dnum,
    "dnum_de": _make_dnum_de,
    "order": _make_order,
    "amount": _make_amount,
    "amount_eur": _make_amount_eur,
    "invoice": _int_maker(1, 99_999, "INV-2026-{:05d}"),
    "ticket_ref": _int_maker(10_000, 99_999, "#{}"),
    "request_id": _make_request_id,
    "tracking": _make_tracking,
    "url": _make_url,
    "docs_url": _make_docs_url,
    "version": _make_version,
    "sdk_version": _make_version,
    "time": _make_time,
    "http_status": _make_http_status,
    "error_json": _make_error_json,
    "vat_id": _make_vat,
    "paid_plan": _make_paid_plan,
    "key_prefix": _make_hex(6),
    "hash8": _make_hex(8),
    "last4": _int_maker(0, 9999, "{:04d}"),
    "seats": _int_maker(3, 250),
    "seats_more": _int_maker(260, 900),
    "records": _int_maker(2, 400, "{},000"),
    "n_small": _int_maker(2, 5),
    "pct": _int_maker(5, 60),
    "seconds": _int_maker(8, 90),
    "ms_fast": _int_maker(80, 300),
    "ms_slow": _int_maker(2000, 30000),
    "rate_limit": _int_maker(3, 12, "{}00"),
    "lock_minutes": _int_maker(15, 60),
    "hours_off": _int_maker(1, 9),
    "line": _int_maker(40, 900),
    "line2": _int_maker(20, 400),
    "col": _int_maker(1000, 98_000),
    "retry_after": _int_maker(1, 120),
}


class Slots(dict):
    """Per-ticket slot values, made on first use by ``str.format_map``.

    Args:
        rnd: The ticket's random stream; a maker draws from it when its slot is first used.
        **preset: Values known up front: the customer's (``name``, ``email``, ``workspace``...),
            ``created_at`` and ``_ts``, the ticket's time in epoch seconds (dates mentioned in
            the ticket lie before it).
    """

    __slots__ = ("_rnd",)

    def __init__(self, rnd: Rnd, **preset: Any) -> None:
        super().__init__(preset)
        self._rnd = rnd

    def __missing__(self, key: str) -> str:
        if key[0].isupper():  # "{Product}" is "{product}" at the start of a sentence.
            lower = self[key[0].lower() + key[1:]]
            value = lower[0].upper() + lower[1:]
        else:
            value = SLOT_MAKERS[key](self._rnd, self)
        self[key] = value
        return value
