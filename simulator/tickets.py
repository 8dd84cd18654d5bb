"""Deterministic synthetic customer-support tickets, for demos, tests and load runs.

Tickets are assembled from templates and slots (product areas, error codes, order numbers, names,
dates, stack traces...), so a million of them stay varied while the same ``seed`` always yields
the same tickets. Generation uses only the standard library; Parquet output needs ``pyarrow``.

Each ticket is a plain dict::

    {"id": "T-000001", "subject": "...", "body": "...",
     "customer": {"name": "...", "email": "...", "plan": "free|pro|enterprise"},
     "priority": "low|normal|high|urgent", "channel": "email|chat|web|phone",
     "created_at": "2026-03-14T09:26:53Z", "tags": ["billing", "refund"], "language": "en"}

Usage as a module::

    from simulator.tickets import generate, write_jsonl, write_parquet

    for ticket in generate(10, seed=7):
        print(ticket["id"], ticket["subject"])
    write_jsonl("out/tickets.jsonl", 1_000_000, seed=1)

Usage as a command (the format follows the file extension)::

    python -m simulator.tickets --count 300 --seed 7 --out examples/tickets.jsonl
    python -m simulator.tickets --count 1000000 --seed 1 --out /tmp/tickets.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import unicodedata
from bisect import bisect
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate
from typing import Any

__all__ = [
    "CHANNELS",
    "LANGUAGES",
    "PARQUET_ROW_GROUP_SIZE",
    "PLANS",
    "PRIORITIES",
    "generate",
    "main",
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

_Rnd = Callable[[], float]


def _cum(weights: Sequence[float]) -> list[float]:
    """Cumulative weights normalised to 1, for ``bisect`` against ``random()``."""
    total = float(sum(weights))
    return [w / total for w in accumulate(weights)]


def _ascii(text: str) -> str:
    """Lower-case ASCII form of a name, for e-mail addresses (``Müller`` -> ``muller``)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


# --------------------------------------------------------------------------------------------
# Slot values. Slots are filled lazily, once per ticket, so a ticket that mentions its order
# number in the subject and the body quotes the same number, and unused slots cost nothing.
# --------------------------------------------------------------------------------------------

_POOLS: dict[str, tuple[str, ...]] = {
    "product": ("the dashboard", "the mobile app", "the desktop app", "the web app",
                "the reporting module", "the shared inbox", "the admin console",
                "the customer portal", "the calendar view"),
    "feature": ("CSV export", "two-factor authentication", "calendar sync", "bulk edit",
                "saved filters", "Kanban board", "custom fields", "SSO", "webhooks",
                "audit log", "scheduled reports", "search", "invoice PDFs", "user roles",
                "recurring tasks", "time tracking", "automation rules", "email templates",
                "mobile widget", "file attachments", "dashboard sharing"),
    "wish": ("dark mode", "bulk editing for tasks", "a Linux desktop app",
             "custom report templates", "more keyboard shortcuts", "an offline mode",
             "more granular user roles", "Gantt charts", "scheduled CSV exports",
             "recurring invoices", "SCIM provisioning", "multi-currency support",
             "a read-only guest role", "two-way calendar sync", "conditional fields in forms",
             "an EU data residency option", "per-project email signatures",
             "webhook retries with a dead-letter view", "a Spanish interface"),
    "device": ("iPhone 15", "iPhone 13 mini", "Pixel 8", "Galaxy S23", "iPad Air",
               "Galaxy Tab S9", "Moto G84", "OnePlus 12"),
    "integration": ("Salesforce", "Slack", "HubSpot", "Zapier", "Shopify", "Jira",
                    "Google Calendar", "Microsoft Teams", "QuickBooks", "Stripe", "Outlook",
                    "Xero", "Intercom", "Google Drive", "Mailchimp"),
    "idp": ("Okta", "Azure AD", "Google Workspace", "OneLogin", "JumpCloud", "Auth0"),
    "competitor": ("Deskwise", "TaskHarbor", "Orbitly", "Cloudleaf", "Helpwell", "Trackr"),
    "carrier": ("UPS", "FedEx", "DHL", "USPS", "Royal Mail", "DPD", "GLS"),
    "hardware": ("the Nimbus Hub", "the card reader", "the starter kit", "the barcode scanner",
                 "the label printer", "the desk phone", "the receipt printer",
                 "two replacement batteries"),
    "city": ("Austin", "Toronto", "Dublin", "Berlin", "Sydney", "Denver", "Leeds", "Chicago",
             "Singapore", "Cape Town", "Auckland", "Vancouver", "Manchester", "Boston"),
    "street": ("1420 Elm Street", "88 Harbour Road", "12 Queen's Walk", "700 Market Ave",
               "5 Birch Lane", "301 Lakeview Dr", "42 Station Road", "19 Mill Street"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday"),
    "duration": ("two days", "about an hour", "three days", "a week", "since yesterday",
                 "most of the morning", "48 hours", "almost two weeks", "four hours"),
    "agent": ("Priya", "Marcus", "Elena", "Tom", "Aisha", "Jonas", "Mei", "Carlos", "Hannah"),
    "past_issue": ("the billing mix-up", "our SSO setup", "the import problem",
                   "the locked account", "the missing invoices", "the webhook issue",
                   "the duplicate contacts", "our data migration", "the broken export"),
    "auth_error": ("Invalid credentials", "AUTH-1042: session expired",
                   "SAML response signature is invalid", "Too many login attempts",
                   "The verification code is incorrect", "User is not assigned to this app",
                   "AUTH-2001: account locked", "Something went wrong, please try again"),
    "app_error": ("Something went wrong", "E_TOKEN_EXPIRED", "ERR_SYNC_CONFLICT",
                  "Request failed with status code 500", ("ValidationError: field 'due_date' "
                  "is required"), "ECONNRESET", "Quota exceeded for workspace",
                  "invalid_grant: refresh token revoked", "ERR_PAYLOAD_TOO_LARGE",
                  "Unexpected token < in JSON at position 0", "DB_TIMEOUT (code 7)"),
    "http_error": ("500 Internal Server Error", "502 Bad Gateway", "503 Service Unavailable",
                   "504 Gateway Timeout", "401 Unauthorized", "403 Forbidden", "404 Not Found",
                   "409 Conflict", "422 Unprocessable Entity", "429 Too Many Requests",
                   "400 Bad Request"),
    "endpoint": ("/v2/tickets", "/v2/contacts", "/v1/invoices", "/v2/webhooks", "/v2/exports",
                 "/v2/users/me", "/v2/search", "/v2/projects", "/v2/tasks/bulk",
                 "/v1/reports/summary", "/v2/attachments", "/v2/events"),
    "method": ("GET", "GET", "POST", "POST", "PUT", "PATCH", "DELETE"),
    "sdk": ("Python", "Node.js", "Java", "Go", "Ruby", "PHP", ".NET"),
    "url_path": ("/settings/billing", "/settings/security", "/reports/weekly", "/inbox",
                 "/projects", "/admin/users", "/integrations", "/login", "/exports",
                 "/account/profile", "/dashboard", "/tasks/board"),
    "tz": ("CET", "EST", "PST", "GMT", "AEST", "IST"),
    "billing_entity": ("NIMBUSDESK* SUBSCR", "NMB*CLOUD 8445551234", "NIMBUS SOFTWARE LTD"),
    "js_prop": ("map", "length", "id", "forEach", "name", "getTime", "status"),
    "js_fn": ("renderGrid", "useBoardState", "formatRow", "onSaveClick", "loadFilters",
              "InvoiceTable.render"),
    "py_fn": ("push_contacts", "sync_invoices", "fetch_page", "export_tasks", "refresh_token"),
    "py_file": ("sync.py", "jobs/nightly.py", "nimbus_client.py", "worker/tasks.py"),
    "java_cls": ("ContactSync", "InvoiceExporter", "NightlyJob", "WebhookRelay"),
    "title": ("Operations Manager", "IT Administrator", "Head of Support", "Office Manager",
              "CTO", "Finance Lead", "Founder", "Customer Success Lead"),
}

# Browser and operating system are drawn as a pair so that they agree ("Safari on iOS").
_SETUPS = (
    ("Chrome 124", "Windows 11"), ("Chrome 126", "macOS Sonoma"), ("Firefox 125", "Ubuntu 22.04"),
    ("Safari 17.4", "macOS Sonoma"), ("Safari", "iOS 17.4"), ("Edge 124", "Windows 11"),
    ("Edge", "Windows 10"), ("Chrome", "Android 14"), ("Chrome", "ChromeOS"),
    ("Firefox ESR", "Windows 10"), ("Brave", "macOS Sequoia"), ("Firefox 126", "macOS Sequoia"),
)

_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")

_ERROR_BODIES = (
    ("rate_limited", "Rate limit exceeded, retry later"),
    ("internal_error", "An unexpected error occurred"),
    ("invalid_request", "Missing required parameter: cursor"),
    ("unauthorized", "The access token is invalid or has expired"),
    ("conflict", "Resource was modified by another request"),
    ("payload_too_large", "Request body exceeds 10 MB"),
)


def _pool_maker(values: tuple[str, ...]) -> Callable[[_Rnd, dict], str]:
    def make(rnd: _Rnd, slots: dict) -> str:
        return values[int(rnd() * len(values))]
    return make


def _int_maker(low: int, high: int, fmt: str = "{}") -> Callable[[_Rnd, dict], str]:
    span = high - low + 1

    def make(rnd: _Rnd, slots: dict) -> str:
        return fmt.format(low + int(rnd() * span))
    return make


def _days_before(rnd: _Rnd, slots: dict) -> time.struct_time:
    # Dates mentioned in a ticket lie before the ticket itself, up to three weeks back.
    return time.gmtime(slots["_ts"] - (1 + int(rnd() * 21)) * 86_400)


def _make_browser(rnd: _Rnd, slots: dict) -> str:
    browser, slots["os"] = _SETUPS[int(rnd() * len(_SETUPS))]
    return browser


def _make_os(rnd: _Rnd, slots: dict) -> str:
    slots["browser"], os_name = _SETUPS[int(rnd() * len(_SETUPS))]
    return os_name


def _make_date(rnd: _Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{_MONTHS[t.tm_mon - 1]} {t.tm_mday}"


def _make_dnum(rnd: _Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{t.tm_mday:02d}/{t.tm_mon:02d}"


def _make_dnum_de(rnd: _Rnd, slots: dict) -> str:
    t = _days_before(rnd, slots)
    return f"{t.tm_mday}.{t.tm_mon}."


def _make_order(rnd: _Rnd, slots: dict) -> str:
    if rnd() < 0.5:
        return f"#{100_000 + int(rnd() * 900_000)}"
    return f"ORD-2026-{int(rnd() * 100_000):05d}"


def _make_amount(rnd: _Rnd, slots: dict) -> str:
    return f"${9 + int(rnd() * 2400):,}.{int(rnd() * 100):02d}"


def _make_amount_eur(rnd: _Rnd, slots: dict) -> str:
    return f"{9 + int(rnd() * 900)},{int(rnd() * 100):02d} €"


def _make_hex(digits: int) -> Callable[[_Rnd, dict], str]:
    scale = 16 ** digits

    def make(rnd: _Rnd, slots: dict) -> str:
        return f"{int(rnd() * scale):0{digits}x}"
    return make


def _make_request_id(rnd: _Rnd, slots: dict) -> str:
    return f"req_{int(rnd() * 16 ** 12):012x}{int(rnd() * 16 ** 8):08x}"


def _make_tracking(rnd: _Rnd, slots: dict) -> str:
    return f"1Z{int(rnd() * 16 ** 6):06X}{int(rnd() * 10 ** 10):010d}"


def _make_url(rnd: _Rnd, slots: dict) -> str:
    path = _POOLS["url_path"][int(rnd() * len(_POOLS["url_path"]))]
    if rnd() < 0.4:
        path += f"/{1000 + int(rnd() * 90_000)}"
    return f"https://{slots['workspace']}.nimbusdesk.com{path}"


def _make_docs_url(rnd: _Rnd, slots: dict) -> str:
    return f"https://developers.nimbusdesk.com/reference{slots['endpoint']}"


def _make_version(rnd: _Rnd, slots: dict) -> str:
    return f"{3 + int(rnd() * 2)}.{int(rnd() * 20)}.{int(rnd() * 10)}"


def _make_time(rnd: _Rnd, slots: dict) -> str:
    return f"{7 + int(rnd() * 12)}:{int(rnd() * 60):02d} UTC"


def _make_http_status(rnd: _Rnd, slots: dict) -> str:
    return slots["http_error"].split(" ", 1)[0]


def _make_error_json(rnd: _Rnd, slots: dict) -> str:
    code, message = _ERROR_BODIES[int(rnd() * len(_ERROR_BODIES))]
    return json.dumps({"error": {"code": code, "message": message,
                                 "request_id": slots["request_id"]}})


def _make_paid_plan(rnd: _Rnd, slots: dict) -> str:
    # Billing complaints from free accounts are about the plan they were upgraded to.
    return "Pro" if slots["plan_name"] == "Free" else slots["plan_name"]


def _make_vat(rnd: _Rnd, slots: dict) -> str:
    prefix = ("DE", "FR", "IE", "NL", "GB", "ES")[int(rnd() * 6)]
    return f"{prefix}{int(rnd() * 10 ** 9):09d}"


_SLOT_MAKERS: dict[str, Callable[[_Rnd, dict], str]] = {
    **{name: _pool_maker(values) for name, values in _POOLS.items()},
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


class _Slots(dict):
    """Per-ticket slot values, made on first use by ``str.format_map``."""

    __slots__ = ("_rnd",)

    def __init__(self, rnd: _Rnd, **preset: Any) -> None:
        super().__init__(preset)
        self._rnd = rnd

    def __missing__(self, key: str) -> str:
        if key[0].isupper():  # "{Product}" is "{product}" at the start of a sentence.
            lower = self[key[0].lower() + key[1:]]
            value = lower[0].upper() + lower[1:]
        else:
            value = _SLOT_MAKERS[key](self._rnd, self)
        self[key] = value
        return value


# --------------------------------------------------------------------------------------------
# English templates. A category holds scenarios of (subjects, intros, details that fit them)
# plus details that fit any of its scenarios, so subject and body tell one story. A body is:
# intro + 1-4 details + optional "what I tried", urgency and closing sentences (2-8 sentences),
# with an optional greeting, sign-off and attachment (stack trace, log line, HTTP response).
# --------------------------------------------------------------------------------------------

_Category = dict[str, Any]

_CATEGORIES: dict[str, _Category] = {
    "login": {
        "tried": True,
        "weight": 12,
        "priority": (8, 55, 25, 12),
        "tags": ("login", "authentication", "sso", "2fa", "password-reset"),
        "scenarios": (
            (("Can't log in", "Login not working since {date}", "Stuck in a login loop",
              "Cannot sign in on {browser}"),
             ("I can't log in to my account since {date}.",
              "Every time I try to sign in I get bounced back to the login page.",
              "After I changed my password yesterday, {product} won't accept the new one."),
             ("It works in a private window but not in a normal one.",
              "The login page at {url} just keeps spinning.",
              "The error message just says \"{auth_error}\".")),
            (("Password reset email never arrives", "Reset link expired",
              "Can't reset my password"),
             ("The password reset email never arrives, I've requested it {n_small} times now.",
              "I tried to reset my password but the link says it has expired."),
             ("I checked my spam folder and there's nothing there.",
              "The reset link says it has expired even when I click it right away.",
              "Our mail server is run by our IT team, maybe they block your emails?")),
            (("Locked out of my account", "Account locked after too many attempts",
              "Account locked - please help"),
             ("I've been locked out of my account and can't get back in.",
              "My account got locked after a few wrong password attempts."),
             ("It says my account is locked for {lock_minutes} minutes, but it's been hours.",
              "The error message just says \"{auth_error}\".")),
            (("2FA code rejected", "Lost my phone - can't pass two-factor",
              "Two-factor authentication not working"),
             (("My two-factor code is rejected every single time, even though the clock on my "
              "phone is correct."),
              "I got a new phone and can no longer pass two-factor authentication."),
             ("I lost my old phone, so I no longer have access to my authenticator app.",
              "The SMS codes arrive several minutes late, by then they have expired.",
              "I don't have the backup codes anymore.")),
            (("SSO login fails: {auth_error}", "SSO broken for our workspace",
              "{idp} SSO not working"),
             ("Our team can no longer sign in through SSO.",
              "Since {date}, SSO sign-in fails for everyone in our workspace."),
             ("Our IdP is {idp} and nothing changed on our side as far as I know.",
              "The error message just says \"{auth_error}\".",
              "Our SAML certificate was rotated last month, could that be related?")),
        ),
        "details": (
            "I'm using {browser} on {os}.",
            "The account email is {email}, in case you need it.",
            "Colleagues on the same workspace can log in without problems.",
            "I'm on the {plan_name} plan, if that matters.",
            "The mobile app on my {device} logs me out every few minutes as well.",
            "We have {seats} people who can't work until this is fixed.",
        ),
    },
    "billing": {
        "weight": 12,
        "priority": (15, 60, 20, 5),
        "tags": ("billing", "refund", "invoice", "payments", "vat"),
        "scenarios": (
            (("Charged twice this month", "Duplicate charge", "Double billing on {date}"),
             ("I was charged {amount} twice on {date}.",
              "We were billed twice for the same month."),
             ("Could you refund the duplicate charge to the original payment method?",
              "The last four digits of the card are {last4}.",
              "On the bank statement both charges show up as {billing_entity}.")),
            (("Refund request for invoice {invoice}", "Refund please",
              "Requesting a refund"),
             ("I'd like to request a refund for invoice {invoice}.",
              "I cancelled my subscription on {date}, yet I was billed again."),
             ("Nobody on our team has used the account since {date}.",
              "The trial was supposed to end without charging us.",
              "I never agreed to the annual plan, I thought it was monthly.")),
            (("Wrong amount on invoice {invoice}", "Question about my latest invoice",
              "Unexpected charge of {amount}"),
             ("Our latest invoice shows {amount}, which is a lot more than we expected.",
              "I'm trying to understand a charge of {amount} on our company card."),
             ("We only have {seats} active users, not {seats_more}.",
              "The invoice is here: {url}",
              "We were also charged sales tax, but we are a tax-exempt nonprofit.")),
            (("Need our VAT number on invoices", "Invoice details incorrect",
              "Company address on invoices"),
             ("We need our company VAT number added to all invoices.",
              "Our invoices show the wrong company name and address."),
             ("Our VAT ID is {vat_id}.",
              "Our finance team needs corrected invoices by the end of the month.",
              "I can't find a way to update the billing address in the admin console.")),
            (("Downgrade from the {paid_plan} plan", "Cheaper plan?",
              "Card declined but we were still charged"),
             ("I want to downgrade from the {paid_plan} plan to something cheaper.",
              "Our card was declined, but the charge still shows up on our statement."),
             ("I'm on the {paid_plan} plan and the pricing page says it should be cheaper.",
              "The charge has been showing as pending for {duration}.")),
        ),
        "details": (
            "Please send the receipt to {email} as well.",
            "Our accounting closes the month on {weekday}.",
            "The account is under {company}.",
        ),
    },
    "bug": {
        "tried": True,
        "weight": 14,
        "priority": (12, 58, 22, 8),
        "tags": ("bug", "regression", "ui", "mobile", "export"),
        "attachment": (0.3, "ui"),
        "scenarios": (
            (("{Feature} is broken", "Bug: {feature} not saving", "Error when using {feature}",
              "\"{app_error}\" in {feature}"),
             ("{Feature} stopped working for us after the latest update.",
              "When I try to use {feature} the page just shows \"Something went wrong\".",
              "I think I found a bug in {feature}.",
              "Since version {version}, {feature} no longer saves my changes."),
             (("Steps to reproduce: open {product}, go to {feature}, change any value and hit "
              "save."),
              "The error said \"{app_error}\".",
              "The spinner runs forever and then nothing happens.")),
            (("{Product} crashes on startup", "{Product} keeps freezing",
              "Blank screen in {product}"),
             ("{Product} crashes as soon as I open it.",
              "{Product} shows a blank white screen after login."),
             ("The app version is {version}.",
              "Reinstalling didn't help.",
              "It only happens in the mobile app on my {device}.")),
            (("Data missing after the update", "Records disappeared",
              "Some of our tasks are gone"),
             ("Some of our data disappeared after the update on {date}.",
              "About {pct} of our records vanished from {product} overnight."),
             ("Undo doesn't bring the data back either.",
              "We have about {records} records in that view, maybe that's related?",
              "Nobody on our team deleted anything.")),
            (("Export produces an empty file", "CSV export broken", "Export is missing columns"),
             ("Exports from {product} come out empty.",
              "The CSV export only contains the header row."),
             ("It worked fine last week.",
              "We need these exports for our weekly board report.")),
            (("Wrong time zone in reports", "Dates shifted in reports"),
             ("Times in our reports are off by {hours_off} hours.",
              "Due dates show up one day early for everyone outside the US."),
             ("Our workspace time zone is set to {tz}.",
              "It started after the daylight saving change.")),
        ),
        "details": (
            "I'm on {browser} on {os}.",
            "It happens about {pct}% of the time, so not every time.",
            "Here's the page where it happens: {url}",
            "Refreshing the page doesn't help.",
            "Other users in our workspace see the same thing.",
            "We first noticed it on {weekday} morning.",
        ),
    },
    "feature_request": {
        "urgency": False,
        "weight": 8,
        "priority": (45, 50, 5, 0),
        "tags": ("feature-request", "roadmap", "ux"),
        "scenarios": (
            (("Feature request: {wish}", "Would love {wish}", "Any plans for {wish}?",
              "Request: {wish}"),
             ("It would be great if you could add {wish}.",
              "Is {wish} on your roadmap?",
              "We love the product, but one thing we really miss is {wish}.",
              "Our team keeps asking me whether {wish} is coming."),
             ("{Competitor} already has this and a few of our people keep pointing that out.",
              "I found an old thread in your community forum asking for the same thing.")),
            (("Suggestion for {feature}", "Idea: improve {feature}", "{Feature} feedback"),
             ("I'd like to suggest an improvement to {feature}.",
              "I have some feedback on {feature}."),
             ("At the moment it takes far too many clicks.",
              "It would be great if it remembered my last settings.")),
        ),
        "details": (
            "Right now we do this manually in a spreadsheet, which takes hours every week.",
            "We'd happily pay a bit more for it.",
            "It would save our team of {seats} a lot of time.",
            "Even a basic version would be a big help.",
            "Is there a workaround in the meantime?",
            "We would be glad to beta-test it.",
            "Ideally it would also be available through the API.",
            "This is the only thing keeping us from moving the rest of the company over.",
            "Our {integration} setup would benefit from it too.",
        ),
    },
    "shipping": {
        "weight": 8,
        "priority": (10, 60, 22, 8),
        "tags": ("shipping", "delivery", "hardware", "damaged", "replacement"),
        "scenarios": (
            (("Where is my order {order}?", "Order {order} not delivered",
              "Tracking hasn't updated in {duration}"),
             ("I ordered {hardware} on {date} (order {order}) and it still hasn't arrived.",
              "The tracking for order {order} hasn't updated in {duration}."),
             ("The tracking number is {tracking} with {carrier}.",
              "We need it before our store opens on {weekday}.",
              "I paid {amount} for express shipping, so I expected it much sooner.",
              "{Carrier} says the label was created but they never received the parcel.")),
            (("Order {order} marked delivered but not received", "Package never arrived"),
             ("Order {order} was marked as delivered, but there was nothing at my door.",),
             ("I was home all day and nobody rang the bell.",
              "My neighbours didn't get it either.",
              "The tracking number is {tracking} with {carrier}.")),
            (("Package arrived damaged", "Damaged {hardware}", "Broken item in order {order}"),
             ("My package arrived today, but {hardware} inside was damaged.",
              "Order {order} arrived with a cracked screen."),
             ("The box was crushed on one side.",
              "I've attached photos of the damage.",
              "Can you send a replacement instead of a refund?")),
            (("Wrong item received in order {order}", "Missing item from my order"),
             ("I received the wrong item in order {order}.",
              "Order {order} arrived, but part of it is missing."),
             ("I ordered {n_small} units but only got one.",
              "Do I need to send the wrong item back, and who pays for the return?")),
            (("Change shipping address for order {order}", "Update delivery address"),
             ("I need to change the shipping address for order {order}.",),
             ("The new address is {street}, {city}.",
              "We moved offices last week.")),
        ),
        "details": (
            "I'd like a refund to the original payment method if this can't be sorted quickly.",
            "The order confirmation was sent to {email}.",
        ),
    },
    "account_deletion": {
        "weight": 5,
        "priority": (10, 65, 20, 5),
        "tags": ("gdpr", "account-deletion", "privacy", "data-request"),
        "scenarios": (
            (("Please delete my account", "GDPR data deletion request",
              "Right to erasure (Art. 17 GDPR)", "Unsubscribe and delete my data"),
             ("Please delete my account and all data associated with it.",
              "Under Article 17 of the GDPR I am requesting the erasure of my personal data.",
              ("I keep receiving marketing emails even though I unsubscribed, so please delete "
              "my data entirely.")),
             ("I understand this cannot be undone.",
              "I can't find a delete button anywhere in the account settings.",
              "Please also remove my data from any third-party processors you use.")),
            (("Request for a copy of my personal data", "Data access request (GDPR Art. 15)"),
             ("I would like a copy of all personal data you hold about me (Article 15 GDPR).",),
             ("Please include any data you received from third parties.",
              "A machine-readable format such as JSON or CSV would be ideal.")),
            (("Close our workspace and remove all data", "Offboarding - delete workspace"),
             ("We are closing our workspace and need all our data removed from your systems.",),
             ("Before deleting, can we export all our projects as CSV?",
              "Our workspace URL is {url}",
              "Please cancel the subscription as well so we are not billed again.")),
        ),
        "details": (
            "The account is registered under {email}.",
            "Please confirm in writing once this is done.",
            "Our DPO will need a confirmation for our records.",
            "I believe you are required to respond within one month.",
        ),
    },
    "api_error": {
        "tried": True,
        "weight": 10,
        "priority": (5, 50, 30, 15),
        "tags": ("api", "rate-limit", "webhooks", "oauth", "developer"),
        "attachment": (0.45, "api"),
        "scenarios": (
            (("API returns {http_error} on {method} {endpoint}",
              "Getting {http_error} from the API", "Intermittent {http_status} errors"),
             (("Our integration started getting {http_error} responses from {method} "
              "{endpoint} around {time}."),
              "Since {date}, about {pct}% of our calls to {endpoint} fail with {http_error}."),
             ("The same request works fine with curl from my laptop.",
              "The response body is empty apart from the status code.",
              "Is there an incident going on? The status page shows everything green.")),
            (("Rate limited even though we're under the limit", "Unexpected 429s",
              "What are the real API rate limits?"),
             (("We're getting 429 Too Many Requests even though we send far fewer than "
              "{rate_limit} requests per minute."),),
             ("We call the API from {n_small} workers in parallel.",
              "The retry-after header is sometimes missing.",
              "We retry with exponential backoff but it doesn't help.")),
            (("Webhook deliveries failing", "Webhooks stopped arriving"),
             ("Webhook deliveries to our endpoint have been failing since {date}.",),
             ("Our endpoint answers within {ms_fast} ms with a 200.",
              "The webhook log in the admin console shows \"{app_error}\".")),
            (("OAuth token refresh fails", "{app_error} when refreshing tokens"),
             ("Refreshing OAuth tokens via /oauth/token returns \"{app_error}\".",),
             ("Users have to reconnect every few days because of this.",
              "The same client ID worked for months.")),
            (("API pagination returns duplicates", "Missing records with cursor pagination"),
             ("Paginating through {endpoint} returns duplicate and missing records.",),
             ("We follow the next cursor exactly as described in the docs.",
              "The docs at {docs_url} don't mention this.")),
        ),
        "details": (
            "One of the failing request IDs is {request_id}.",
            "We're using the official {sdk} SDK, version {sdk_version}.",
            "Nothing changed in our code since the last deploy on {date}.",
            "Our API key starts with {key_prefix} in case you need to look it up.",
            "This is breaking our production sync with {integration}.",
            "Response times went from around {ms_fast} ms to over {ms_slow} ms.",
        ),
    },
    "performance": {
        "tried": True,
        "weight": 7,
        "priority": (10, 55, 27, 8),
        "tags": ("performance", "latency", "timeout"),
        "attachment": (0.15, "ui"),
        "scenarios": (
            (("{Product} is extremely slow", "Slow loading times since {date}",
              "Everything is lagging today"),
             ("{Product} has been painfully slow for {duration}.",
              "Everything in {product} feels sluggish today."),
             ("The browser shows a \"page unresponsive\" warning.",
              "It got noticeably worse after the update on {date}.")),
            (("Reports take forever to load", "Timeouts when opening large projects"),
             ("Loading a report now takes {seconds} seconds, it used to be instant.",
              "Opening our larger projects times out about half the time."),
             ("We have around {records} records in the workspace.",
              "Here is an example of a slow page: {url}")),
            (("Search is very slow", "Search takes ages"),
             ("Search takes {seconds} seconds to return anything.",),
             ("Even searching for an exact ticket number is slow.",
              "The network tab shows {endpoint} taking {ms_slow} ms.")),
        ),
        "details": (
            "Our internet connection is fine, other sites load quickly.",
            "It's worst in the morning between 9 and 11 {tz}.",
            "I'm on {browser} on {os}.",
            "Colleagues in {city} see the same thing.",
            "This is costing us a lot of time every day.",
        ),
    },
    "integration": {
        "tried": True,
        "weight": 8,
        "priority": (12, 58, 23, 7),
        "tags": ("integration", "sync", "third-party"),
        "attachment": (0.2, "api"),
        "scenarios": (
            (("{integration} integration not syncing", "{integration} sync stopped"),
             ("Our {integration} integration stopped syncing on {date}.",
              "Changes made in {integration} don't show up in {product} anymore."),
             ("The integration settings page says \"Last sync: {date}\".",
              "Is there a way to trigger a full resync manually?")),
            (("Can't connect {integration}", "How do I set up the {integration} integration?"),
             (("I can't connect {integration}, the authorization window closes and nothing "
              "happens."),
              ("I'm trying to set up the {integration} integration but I'm stuck at the "
              "permissions step.")),
             ("Our {integration} admin confirmed the permissions are correct.",
              "I'm an admin on both sides.")),
            (("{integration} sync creates duplicates", "Duplicate records from {integration}"),
             ("The {integration} sync creates duplicate records every time it runs.",),
             ("We now have thousands of duplicates to clean up.",
              "It only seems to affect records created after {date}.")),
            (("{integration} notifications stopped", "No more alerts in {integration}"),
             ("Notifications to {integration} stopped arriving {duration} ago.",),
             ("The channel still shows the app as installed.",
              "We rely on these alerts for our on-call rotation.")),
        ),
        "details": (
            "I already tried disconnecting and reconnecting the integration.",
            "We have about {records} records that should sync.",
            "The error in the sync log is \"{app_error}\".",
            "We rely on this for our daily reporting.",
            "The integration is connected with the account {email}.",
        ),
    },
    "onboarding": {
        "weight": 8,
        "priority": (35, 58, 6, 1),
        "tags": ("onboarding", "how-to", "import", "new-customer"),
        "scenarios": (
            (("Getting started questions", "New customer - a few questions",
              "How do I invite my team?"),
             ("We just signed up for the {plan_name} plan and I have a few questions.",
              "How do I invite the rest of my team to our workspace?"),
             ("Do invited users count against our seat limit right away?",
              "Can we set different permissions for managers and agents?",
              "Do you offer a free onboarding call?")),
            (("Importing data from {competitor}", "Migration from {competitor}"),
             ("We're moving over from {competitor} and want to import our existing data.",),
             ("We have around {records} records to import.",
              "Is there a CSV template for the import?",
              "Is there a sandbox where we can test without touching real data?")),
            (("Question about setting up {feature}", "Best way to organise our workspace?"),
             ("I'm setting up {feature} for the first time and I'm not sure where to start.",
              "Is there a recommended way to structure projects for a team of {seats}?"),
             ("Are there any video tutorials you'd recommend?",
              "Our IT team will want to set up SSO with {idp} later.")),
        ),
        "details": (
            "I looked at the help center but couldn't find a clear answer.",
            "We'd like to be up and running before {weekday}.",
        ),
    },
    "escalation": {
        "weight": 5,
        "priority": (0, 15, 45, 40),
        "tags": ("escalation", "churn-risk", "complaint", "vip"),
        "urgency": False,
        "closings": ("I expect a reply today.", "Waiting for your answer.",
                     "Call me as soon as you read this."),
        "scenarios": (
            (("THIRD time asking - still no answer", ("Escalation: ticket {ticket_ref} still "
              "unresolved"), "Still waiting after {duration}"),
             (("This is the third time I'm writing about this and I still haven't received a "
              "real answer."),
              "I opened ticket {ticket_ref} {duration} ago and nobody has done anything."),
             ("Every reply I get is a copy-paste from the help center.",
              "I've been told twice that engineering is \"looking into it\".")),
            (("Unacceptable service", "Considering cancelling our contract",
              "Need a manager NOW"),
             ("Frankly, the service we've received over the last few weeks is unacceptable.",
              "I want this escalated to a manager immediately.",
              "We are seriously considering cancelling our contract."),
             ("Our account manager hasn't replied either.",
              "If this is not resolved by {weekday} we will be moving to {competitor}.")),
            (("Outage - whole team blocked", "DOWN AGAIN"),
             ("YOUR PRODUCT HAS BEEN DOWN FOR US ALL MORNING.",
              "{Product} has been down for us for {duration} and nobody tells us anything."),
             ("Our whole team of {seats} has been unable to work.",
              "I expect a credit for the downtime.")),
        ),
        "details": (
            "We pay {amount} a month for the {paid_plan} plan and expect better.",
            "I want a call today, not another email.",
            "We've lost actual revenue because of this.",
            "Do not close this ticket until the issue is actually fixed.",
        ),
    },
    "thanks": {
        "weight": 3,
        "priority": (70, 30, 0, 0),
        "tags": ("feedback", "praise"),
        "urgency": False,
        "closings": ("Have a great week!", "Keep up the good work.", "Thanks again."),
        "scenarios": (
            (("Thank you!", "Great support from {agent}", "Thanks {agent}!"),
             ("Just wanted to say thank you to {agent} for sorting out {past_issue} so quickly.",
              "{Agent} from your team was fantastic yesterday."),
             ("{Agent} was patient and explained everything clearly.",)),
            (("Thanks for the quick help", "Problem solved - thanks", "Just a quick thank you"),
             ("Thanks a lot for your help with {past_issue}.",
              "I wanted to let you know that everything works again.",
              "Big thanks to your support team, you've been great."),
             ("No further action needed, feel free to close the ticket.",)),
        ),
        "details": (
            "Honestly the best support experience I've had with any software vendor.",
            "The whole team is happy again.",
            "I'll be recommending you to a few friends.",
            "The new {feature} is great too, by the way.",
            "We're already planning to add {n_small} more seats next month.",
        ),
    },
}

_EN_TRIED = (
    "I already restarted everything, no luck.",
    "I searched the help center but didn't find anything.",
    "A colleague on the same account has the same issue.",
    "I tried on a different computer with the same result.",
    "I've already contacted our own IT team and they couldn't find anything either.",
)
_EN_URGENCY = (
    "This is blocking our team.",
    "Not super urgent, but I'd appreciate an answer this week.",
    "We have a customer demo on {weekday}, so the sooner the better.",
    "This is quite urgent for us.",
    "It's not critical, just annoying.",
)
_EN_CLOSINGS = (
    "Thanks in advance.", "Any help would be appreciated.",
    "Please let me know if you need more information.", "Looking forward to your reply.",
    "Can someone get back to me today?", "Thanks for looking into it.", "Cheers.",
)
_EN_GREETINGS = ("Hi,", "Hello,", "Hi team,", "Hey there,", "Good morning,", "Dear support,",
                 "Hi support,", "Hello Nimbus team,")
_EN_CHAT_GREETINGS = ("hi", "hello", "hey", "Hi there!", "hi, quick question")
_EN_SIGNOFFS = ("Thanks,\n{first}", "Best regards,\n{name}", "Cheers,\n{first}", "Best,\n{first}",
                "Regards,\n{name}", "Thank you,\n{name}")
_EN_COMPANY_SIGNOFFS = ("Regards,\n{name}\n{company}", "Best,\n{name}\n{title}, {company}",
                        "Kind regards,\n{name} | {title}\n{company}")

_ATTACHMENTS_UI = (
    ("Console output:\n\nUncaught TypeError: Cannot read properties of undefined (reading "
    "'{js_prop}')\n    at {js_fn} (app.{hash8}.js:2:{col})\n    at HTMLButtonElement.<anonymous> "
    "(vendor.{hash8}.js:1:{line2})"),
    ("From the browser console:\n\nGET https://api.nimbusdesk.com{endpoint} {http_status} "
    "({ms_slow} ms)\nError: {app_error}\n    at fetchJson (api.{hash8}.js:1:{col})"),
)
_ATTACHMENTS_API = (
    ("Traceback from our sync job:\n\nTraceback (most recent call last):\n  File "
    "\"/srv/app/{py_file}\", line {line}, in {py_fn}\n    resp.raise_for_status()\n  File "
    "\"/usr/lib/python3.11/site-packages/requests/models.py\", line 1021, in raise_for_status\n"
    "    raise HTTPError(http_error_msg, response=self)\nrequests.exceptions.HTTPError: "
    "{http_error} for url: https://api.nimbusdesk.com{endpoint}"),
    ("Stack trace:\n\ncom.nimbusdesk.client.ApiException: {http_error}\n\tat "
    "com.nimbusdesk.client.ApiClient.invoke(ApiClient.java:{line})\n\tat "
    "com.example.sync.{java_cls}.run({java_cls}.java:{line2})\n\tat "
    "java.base/java.lang.Thread.run(Thread.java:1583)"),
    "Response body:\n\n{error_json}",
    ("$ curl -i -X {method} https://api.nimbusdesk.com{endpoint}\nHTTP/2 {http_status}\n"
    "x-request-id: {request_id}\nretry-after: {retry_after}"),
    ("From our logs:\n\n{created_at} ERROR [sync-worker-{n_small}] {method} {endpoint} -> "
    "{http_error} ({ms_slow} ms) request_id={request_id}"),
)
_ATTACHMENTS = {"ui": _ATTACHMENTS_UI, "api": _ATTACHMENTS_API}

# --------------------------------------------------------------------------------------------
# Non-English tickets: fewer topics, same shape (intro + details + closing). In each topic the
# i-th subject goes with the i-th intro.
# --------------------------------------------------------------------------------------------

_FOREIGN: dict[str, dict[str, Any]] = {
    "es": {
        "weight": 1.8,
        "greetings": ("Hola,", "Buenos días,", "Estimado equipo de soporte,", "Buenas tardes,"),
        "closings": ("Gracias de antemano.", "Quedo a la espera de su respuesta.",
                     "Muchas gracias por su ayuda.", "¿Me pueden ayudar, por favor?"),
        "signoffs": ("Saludos,\n{first}", "Un saludo,\n{name}", "Atentamente,\n{name}"),
        "topics": {
            "login": (
                ("No puedo iniciar sesión", "Problema con el acceso a mi cuenta",
                 "No me llega el correo para restablecer la contraseña"),
                ("Desde el {dnum} no puedo entrar en mi cuenta.",
                 "Cada vez que intento iniciar sesión vuelvo a la página de inicio.",
                 "He pedido restablecer la contraseña {n_small} veces y el correo no llega."),
                ("El mensaje de error dice \"{auth_error}\".", "Uso {browser} en {os}.",
                 "Ya revisé la carpeta de spam.", "Mi correo es {email}.",
                 "Mis compañeros sí pueden entrar sin problema."),
            ),
            "billing": (
                ("Cobro duplicado", "Solicitud de reembolso de la factura {invoice}",
                 "Duda sobre mi factura"),
                ("Me han cobrado {amount_eur} dos veces este mes.",
                 "Quisiera solicitar el reembolso de la factura {invoice}.",
                 "Cancelé mi suscripción el {dnum} y me siguen cobrando."),
                ("Los últimos cuatro dígitos de la tarjeta son {last4}.",
                 "Necesito una factura corregida con nuestro NIF.",
                 "Por favor, devuelvan el importe al mismo método de pago.",
                 "Estoy en el plan {plan_name}."),
            ),
            "shipping": (
                ("¿Dónde está mi pedido {order}?", "Pedido {order} no recibido",
                 "El paquete llegó dañado"),
                ("Hice el pedido {order} el {dnum} y todavía no ha llegado.",
                 "El seguimiento del pedido {order} no se actualiza desde hace días.",
                 "El paquete llegó hoy pero el dispositivo está roto."),
                ("El número de seguimiento es {tracking} ({carrier}).",
                 "Prefiero que me envíen uno nuevo en lugar de un reembolso.",
                 "Estuve en casa todo el día y nadie llamó al timbre.",
                 "Lo necesito antes del fin de semana."),
            ),
            "bug": (
                ("La aplicación se cierra sola", "La exportación no funciona",
                 "Error en la aplicación"),
                ("Desde la última actualización la aplicación se cierra al abrirla.",
                 "Al exportar el informe el archivo sale vacío.",
                 "Aparece el error \"{app_error}\" cuando intento guardar los cambios."),
                ("Uso la versión {version}.", "Pasa en mi {device} y también en el ordenador.",
                 "La semana pasada funcionaba bien.",
                 "Ya probé cerrar sesión y borrar la caché."),
            ),
            "account_deletion": (
                ("Eliminar mi cuenta", "Solicitud de supresión de datos (RGPD)"),
                ("Por favor, eliminen mi cuenta y todos mis datos personales.",
                 "Conforme al artículo 17 del RGPD solicito la supresión de mis datos."),
                ("La cuenta está registrada con {email}.",
                 "Les ruego que me confirmen por escrito cuando esté hecho.",
                 "No encuentro la opción de borrar la cuenta en la configuración."),
            ),
        },
    },
    "fr": {
        "weight": 1.2,
        "greetings": ("Bonjour,", "Bonjour à toute l'équipe,", "Madame, Monsieur,", "Bonsoir,"),
        "closings": ("Merci d'avance.", "Dans l'attente de votre retour.",
                     "Merci pour votre aide.", "Pouvez-vous m'aider, s'il vous plaît ?"),
        "signoffs": ("Cordialement,\n{name}", "Bien à vous,\n{first}", "Merci,\n{first}"),
        "topics": {
            "login": (
                ("Impossible de me connecter", "Problème de connexion à mon compte",
                 "Je ne reçois pas l'e-mail de réinitialisation"),
                ("Depuis le {dnum}, je n'arrive plus à me connecter à mon compte.",
                 "À chaque tentative de connexion, je suis renvoyé vers la page d'accueil.",
                 ("J'ai demandé {n_small} fois la réinitialisation du mot de passe, sans rien "
                 "recevoir.")),
                ("Le message d'erreur indique « {auth_error} ».", "J'utilise {browser} sous {os}.",
                 "J'ai déjà vérifié mes spams.", "Mon adresse est {email}.",
                 "Mes collègues, eux, peuvent se connecter."),
            ),
            "billing": (
                ("Double prélèvement", "Demande de remboursement – facture {invoice}",
                 "Question sur ma facture"),
                ("J'ai été débité deux fois de {amount_eur} ce mois-ci.",
                 "Je souhaite obtenir le remboursement de la facture {invoice}.",
                 "J'ai résilié mon abonnement le {dnum}, mais j'ai de nouveau été prélevé."),
                ("Les quatre derniers chiffres de la carte sont {last4}.",
                 "Merci d'ajouter notre numéro de TVA sur les factures.",
                 "Merci de rembourser sur le moyen de paiement d'origine.",
                 "Je suis sur l'offre {plan_name}."),
            ),
            "shipping": (
                ("Où est ma commande {order} ?", "Commande {order} non reçue",
                 "Colis arrivé endommagé"),
                ("J'ai passé la commande {order} le {dnum} et je ne l'ai toujours pas reçue.",
                 "Le suivi de la commande {order} n'a pas bougé depuis plusieurs jours.",
                 "Le colis est arrivé aujourd'hui, mais l'appareil est cassé."),
                ("Le numéro de suivi est {tracking} ({carrier}).",
                 "Je préfère un remplacement plutôt qu'un remboursement.",
                 "J'étais chez moi toute la journée et personne n'a sonné.",
                 "J'en ai besoin avant la fin de la semaine."),
            ),
            "bug": (
                ("L'application plante au démarrage", "L'export ne fonctionne plus",
                 "Bug dans l'application"),
                ("Depuis la dernière mise à jour, l'application plante à l'ouverture.",
                 "Quand j'exporte le rapport, le fichier est vide.",
                 "L'erreur « {app_error} » s'affiche quand j'enregistre mes modifications."),
                ("J'utilise la version {version}.",
                 "Le problème se produit sur mon {device} et sur l'ordinateur.",
                 "Tout fonctionnait la semaine dernière.",
                 "J'ai déjà essayé de me déconnecter et de vider le cache."),
            ),
            "account_deletion": (
                ("Suppression de mon compte", "Demande d'effacement des données (RGPD)"),
                ("Merci de supprimer mon compte ainsi que toutes mes données personnelles.",
                 "Conformément à l'article 17 du RGPD, je demande l'effacement de mes données."),
                ("Le compte est enregistré avec l'adresse {email}.",
                 "Merci de me confirmer la suppression par écrit.",
                 "Je ne trouve pas l'option de suppression dans les paramètres."),
            ),
        },
    },
    "de": {
        "weight": 1.2,
        "greetings": ("Hallo,", "Guten Tag,", "Sehr geehrte Damen und Herren,", "Moin,"),
        "closings": ("Vielen Dank im Voraus.", "Ich freue mich auf Ihre Rückmeldung.",
                     "Danke für Ihre Hilfe.", "Können Sie mir bitte helfen?"),
        "signoffs": ("Viele Grüße\n{name}", "Mit freundlichen Grüßen\n{name}",
                     "Danke und Gruß\n{first}"),
        "topics": {
            "login": (
                ("Login funktioniert nicht", "Kein Zugriff auf mein Konto",
                 "E-Mail zum Zurücksetzen des Passworts kommt nicht an"),
                ("Seit dem {dnum_de} kann ich mich nicht mehr anmelden.",
                 "Bei jedem Anmeldeversuch lande ich wieder auf der Startseite.",
                 ("Ich habe schon {n_small}-mal ein neues Passwort angefordert, aber keine E-Mail "
                 "erhalten.")),
                ("Die Fehlermeldung lautet „{auth_error}“.", "Ich nutze {browser} unter {os}.",
                 "Den Spam-Ordner habe ich bereits geprüft.",
                 "Meine E-Mail-Adresse ist {email}.",
                 "Meine Kollegen können sich problemlos anmelden."),
            ),
            "billing": (
                ("Doppelte Abbuchung", "Erstattung für Rechnung {invoice}",
                 "Frage zu meiner Rechnung"),
                ("Mir wurden diesen Monat zweimal {amount_eur} abgebucht.",
                 "Ich möchte die Erstattung der Rechnung {invoice} beantragen.",
                 "Ich habe mein Abo am {dnum_de} gekündigt, wurde aber erneut belastet."),
                ("Die letzten vier Ziffern der Karte sind {last4}.",
                 "Bitte tragen Sie unsere USt-IdNr. auf den Rechnungen ein.",
                 "Bitte erstatten Sie den Betrag auf das ursprüngliche Zahlungsmittel.",
                 "Wir nutzen den {plan_name}-Tarif."),
            ),
            "shipping": (
                ("Wo bleibt meine Bestellung {order}?", "Bestellung {order} nicht angekommen",
                 "Paket beschädigt angekommen"),
                (("Ich habe am {dnum_de} die Bestellung {order} aufgegeben und sie ist immer noch "
                 "nicht da."),
                 ("Die Sendungsverfolgung für Bestellung {order} wurde seit Tagen nicht "
                 "aktualisiert."),
                 "Das Paket kam heute an, aber das Gerät ist kaputt."),
                ("Die Sendungsnummer ist {tracking} ({carrier}).",
                 "Mir wäre ein Ersatzgerät lieber als eine Erstattung.",
                 "Ich war den ganzen Tag zu Hause, es hat niemand geklingelt.",
                 "Ich brauche es bis Ende der Woche."),
            ),
            "bug": (
                ("App stürzt beim Start ab", "Export funktioniert nicht mehr",
                 "Fehler in der App"),
                ("Seit dem letzten Update stürzt die App beim Öffnen ab.",
                 "Beim Export des Berichts ist die Datei leer.",
                 "Beim Speichern erscheint die Fehlermeldung „{app_error}“."),
                ("Ich nutze Version {version}.",
                 "Es passiert auf meinem {device} und auch am Rechner.",
                 "Letzte Woche hat noch alles funktioniert.",
                 "Abmelden und Cache leeren habe ich schon versucht."),
            ),
            "account_deletion": (
                ("Bitte mein Konto löschen", "Antrag auf Löschung nach DSGVO"),
                ("Bitte löschen Sie mein Konto und alle meine personenbezogenen Daten.",
                 "Gemäß Art. 17 DSGVO beantrage ich die Löschung meiner Daten."),
                ("Das Konto ist unter {email} registriert.",
                 "Bitte bestätigen Sie mir die Löschung schriftlich.",
                 "In den Einstellungen finde ich keine Möglichkeit, das Konto zu löschen."),
            ),
        },
    },
    "pt": {
        "weight": 0.8,
        "greetings": ("Olá,", "Bom dia,", "Prezados,", "Boa tarde,"),
        "closings": ("Desde já, obrigado.", "Aguardo retorno.", "Obrigada pela ajuda.",
                     "Podem me ajudar, por favor?"),
        "signoffs": ("Abraço,\n{first}", "Atenciosamente,\n{name}", "Obrigado,\n{first}"),
        "topics": {
            "login": (
                ("Não consigo fazer login", "Problema para acessar minha conta",
                 "O e-mail de redefinição de senha não chega"),
                ("Desde {dnum} não consigo entrar na minha conta.",
                 "Toda vez que tento fazer login volto para a página inicial.",
                 "Já pedi a redefinição de senha {n_small} vezes e o e-mail não chega."),
                ("A mensagem de erro diz \"{auth_error}\".", "Estou usando {browser} no {os}.",
                 "Já verifiquei a caixa de spam.", "Meu e-mail é {email}.",
                 "Meus colegas conseguem entrar normalmente."),
            ),
            "billing": (
                ("Cobrança em duplicidade", "Pedido de reembolso da fatura {invoice}",
                 "Dúvida sobre a minha fatura"),
                ("Fui cobrado duas vezes em {amount_eur} este mês.",
                 "Gostaria de solicitar o reembolso da fatura {invoice}.",
                 "Cancelei minha assinatura em {dnum} e continuo sendo cobrado."),
                ("Os quatro últimos dígitos do cartão são {last4}.",
                 "Preciso de uma nota fiscal com o CNPJ da empresa.",
                 "Por favor, façam o estorno no mesmo meio de pagamento.",
                 "Estou no plano {plan_name}."),
            ),
            "shipping": (
                ("Onde está meu pedido {order}?", "Pedido {order} não entregue",
                 "Produto chegou danificado"),
                ("Fiz o pedido {order} em {dnum} e até agora não chegou.",
                 "O rastreamento do pedido {order} não é atualizado há dias.",
                 "A encomenda chegou hoje, mas o aparelho está quebrado."),
                ("O código de rastreamento é {tracking} ({carrier}).",
                 "Prefiro receber um produto novo em vez do reembolso.",
                 "Fiquei em casa o dia todo e ninguém tocou a campainha.",
                 "Preciso dele até o fim da semana."),
            ),
            "bug": (
                ("O aplicativo fecha sozinho", "A exportação não funciona",
                 "Erro no aplicativo"),
                ("Desde a última atualização o aplicativo fecha ao abrir.",
                 "Quando exporto o relatório, o arquivo vem vazio.",
                 "Aparece o erro \"{app_error}\" quando tento salvar as alterações."),
                ("Estou usando a versão {version}.",
                 "Acontece no meu {device} e também no computador.",
                 "Na semana passada funcionava normalmente.",
                 "Já tentei sair da conta e limpar o cache."),
            ),
            "account_deletion": (
                ("Excluir minha conta", "Solicitação de exclusão de dados (LGPD)"),
                ("Por favor, excluam minha conta e todos os meus dados pessoais.",
                 "Com base na LGPD, solicito a exclusão dos meus dados pessoais."),
                ("A conta está registrada com o e-mail {email}.",
                 "Peço que me confirmem por escrito quando a exclusão for concluída.",
                 "Não encontro a opção de excluir a conta nas configurações."),
            ),
        },
    },
}

# --------------------------------------------------------------------------------------------
# Customers.
# --------------------------------------------------------------------------------------------

_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "en": (
        ("James", "Olivia", "Liam", "Emma", "Noah", "Ava", "Sophia", "Mason", "Isabella", "Ethan",
         "Mia", "Lucas", "Amelia", "Aiden", "Harper", "Priya", "Arjun", "Wei", "Mei", "Kenji",
         "Yuki", "Fatima", "Omar", "Aisha", "Kwame", "Chloe", "Daniel", "Grace", "Samuel", "Zoe",
         "Ryan", "Hannah", "Jack", "Leah", "Nathan", "Ruby", "Owen", "Ivy", "Caleb", "Nora",
         "Diego", "Sofia", "Tariq", "Ananya", "Connor", "Megan", "Tyler", "Rachel"),
        ("Smith", "Johnson", "Williams", "Brown", "Jones", "Miller", "Davis", "Wilson", "Taylor",
         "Anderson", "Thomas", "Moore", "Martin", "Thompson", "White", "Harris", "Clark", "Lewis",
         "Walker", "Hall", "Young", "Patel", "Shah", "Chen", "Wang", "Nguyen", "Kim", "Tanaka",
         "Okafor", "Mensah", "Hussain", "Khan", "O'Brien", "Murphy", "Kelly", "Campbell",
         "Stewart", "Reid", "Fraser", "Cohen", "Rossi", "Novak", "Kowalski", "Lindqvist"),
    ),
    "es": (
        ("Lucía", "María", "Sofía", "Carmen", "Alejandro", "Javier", "Pablo", "Diego", "Valentina",
         "Andrés", "Camila", "Mateo", "Elena", "Raúl", "Paula"),
        ("García", "Fernández", "López", "Martínez", "Sánchez", "Pérez", "Gómez", "Ruiz",
         "Díaz", "Moreno", "Álvarez", "Romero", "Torres", "Navarro"),
    ),
    "fr": (
        ("Camille", "Léa", "Manon", "Chloé", "Hugo", "Louis", "Lucas", "Jules", "Inès", "Théo",
         "Élodie", "Mathieu", "Sébastien", "Amélie"),
        ("Martin", "Bernard", "Dubois", "Thomas", "Robert", "Petit", "Durand", "Leroy", "Moreau",
         "Lefèvre", "Girard", "Faure", "Rousseau", "Lambert"),
    ),
    "de": (
        ("Jonas", "Lukas", "Felix", "Maximilian", "Leonie", "Anna", "Lena", "Sophie", "Jan",
         "Katrin", "Jürgen", "Sabine", "Tobias", "Hannah"),
        ("Müller", "Schmidt", "Schneider", "Fischer", "Weber", "Meyer", "Wagner", "Becker",
         "Schulz", "Hoffmann", "Koch", "Richter", "Wolf", "Schäfer"),
    ),
    "pt": (
        ("João", "Ana", "Pedro", "Mariana", "Lucas", "Beatriz", "Gabriel", "Larissa", "Rafael",
         "Fernanda", "Thiago", "Juliana", "Gonçalo", "Inês"),
        ("Silva", "Santos", "Oliveira", "Souza", "Pereira", "Costa", "Rodrigues", "Almeida",
         "Nascimento", "Lima", "Araújo", "Ferreira", "Carvalho", "Gomes"),
    ),
}

_FREE_DOMAINS: dict[str, tuple[str, ...]] = {
    "en": ("gmail.com", "outlook.com", "yahoo.com", "icloud.com", "proton.me", "hotmail.com"),
    "es": ("gmail.com", "hotmail.es", "yahoo.es", "outlook.es"),
    "fr": ("gmail.com", "orange.fr", "free.fr", "laposte.net", "outlook.fr"),
    "de": ("gmail.com", "gmx.de", "web.de", "t-online.de", "posteo.de"),
    "pt": ("gmail.com", "uol.com.br", "hotmail.com", "sapo.pt", "terra.com.br"),
}

_COMPANIES = (
    "Acme Logistics", "Bluefin Health", "Northwind Traders", "Brightpath Learning",
    "Copperleaf Dental", "Harbor & Finch", "Summit Outdoor Co", "Pinecrest Realty",
    "Lumen Analytics", "Redwood Legal", "Quantum Bakery", "Atlas Freight", "Greenline Energy",
    "Silverstone Clinics", "Urban Nest Interiors", "Kestrel Security", "Maple & Oak Studio",
    "Orbit Travel", "Tidewater Marine", "Vantage Recruiting", "Blue Ridge Coffee",
    "Helix Biotech", "Foxglove Florists", "Ironclad Fitness", "Sunrise Home Care",
    "Granite Peak Software", "Coastal Print Works", "Nordlicht GmbH", "Soluciones Ibéricas SL",
    "Atelier Lumière SARL", "Vila Verde Comércio", "Polaris Events", "Riverbend Veterinary",
)
_COMPANY_DOMAINS = tuple(
    _ascii(c.replace(" GmbH", "").replace(" SARL", "").replace(" SL", "")) + (
        ".de" if c.endswith("GmbH") else ".fr" if c.endswith("SARL")
        else ".es" if c.endswith(" SL") else ".com")
    for c in _COMPANIES
)

_PLAN_NAMES = {"free": "Free", "pro": "Pro", "enterprise": "Enterprise"}

# --------------------------------------------------------------------------------------------
# Distributions (weights follow the order of the tuples they index).
# --------------------------------------------------------------------------------------------

_CAT_NAMES = tuple(_CATEGORIES)
_CAT_CUM = _cum([c["weight"] for c in _CATEGORIES.values()])
_FOREIGN_SHARE = sum(lang["weight"] for lang in _FOREIGN.values()) / 100  # about 5%
_FOREIGN_NAMES = tuple(_FOREIGN)
_FOREIGN_CUM = _cum([lang["weight"] for lang in _FOREIGN.values()])
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
     c.get("attachment", (0.0, "ui"))[0], _ATTACHMENTS[c.get("attachment", (0.0, "ui"))[1]],
     c.get("tried", False), c.get("urgency", True), c.get("closings", _EN_CLOSINGS))
    for c in _CATEGORIES.values()
)
_FOREIGN_TABLE = tuple(
    (code, lang, tuple(lang["topics"].items())) for code, lang in _FOREIGN.items()
)
_NAME_TABLE = {
    lang: (firsts, lasts, tuple(_ascii(f) for f in firsts), tuple(_ascii(s) for s in lasts))
    for lang, (firsts, lasts) in _NAMES.items()
}


def _pick(rnd: _Rnd, seq: Sequence[Any]) -> Any:
    return seq[int(rnd() * len(seq))]


def _distinct(rnd: _Rnd, seq: Sequence[str], k: int) -> list[str]:
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


def _customer(rnd: _Rnd, language: str) -> tuple[dict[str, str], dict[str, str]]:
    """A customer and the slots that refer to them (name, company, plan...)."""
    firsts, lasts, firsts_a, lasts_a = _NAME_TABLE[language]
    i = int(rnd() * len(firsts))
    j = int(rnd() * len(lasts))
    first, last, fa, la = firsts[i], lasts[j], firsts_a[i], lasts_a[j]
    plan = PLANS[bisect(_PLAN_CUM, rnd())]
    c = int(rnd() * len(_COMPANIES))
    company = _COMPANIES[c]
    if plan == "free" and rnd() < 0.85:
        domain = _pick(rnd, _FREE_DOMAINS[language])
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
    slots = {"first": first, "name": name, "email": email, "plan_name": _PLAN_NAMES[plan],
             "company": company, "workspace": workspace}
    return customer, slots


def _english(rnd: _Rnd, slots: _Slots, channel: str,
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
        sentences.append(_pick(rnd, _EN_TRIED))
    if urgency and rnd() < 0.25:
        sentences.append(_pick(rnd, _EN_URGENCY))
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
            parts.append(_pick(rnd, _EN_CHAT_GREETINGS))
    elif rnd() < 0.8:
        parts.append(_pick(rnd, _EN_GREETINGS))
    parts.append(text)
    if attach_p and rnd() < attach_p:
        parts.append(_pick(rnd, attachments))
    if channel in ("email", "web") and rnd() < 0.75:
        signoffs = _EN_COMPANY_SIGNOFFS if plan != "free" and rnd() < 0.4 else _EN_SIGNOFFS
        parts.append(_pick(rnd, signoffs))
    subject = _pick(rnd, subjects)
    body = "\n\n".join(parts).format_map(slots)
    return subject.format_map(slots), body, priority_cum, tag_pool


def _foreign(rnd: _Rnd, slots: _Slots, lang: dict[str, Any], topics: tuple,
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
            slots = _Slots(rnd, _ts=ts, created_at=created_at, **preset)
            subject, body, category = _foreign(rnd, slots, lang, topics, channel)
            priority_cum = _BASE_PRIORITY_CUM
            tag_pool = (category.replace("_", "-"), "translation-needed") + _GENERIC_TAGS
        else:
            code = "en"
            customer, preset = _customer(rnd, code)
            slots = _Slots(rnd, _ts=ts, created_at=created_at, **preset)
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


_WRITERS = {".jsonl": write_jsonl, ".parquet": write_parquet}


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: write ``--count`` tickets to ``--out``.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns:
        The process exit code (0 on success; argparse exits with 2 on bad flags).
    """
    parser = argparse.ArgumentParser(
        prog="python -m simulator.tickets",
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
