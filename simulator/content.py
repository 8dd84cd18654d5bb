"""Deterministic reply content: support-style prose, or JSON that fits a requested schema.

Everything here is a pure function of the request. The same model, messages and seed always give
the same reply, because the randomness comes from a SHA-256 digest of the request (never from
Python's salted ``hash()``):

    key = request_key("gpt-4o-mini", messages)
    rng = content_rng(key, seed=None)
    text = support_reply(messages, rng)
    data = instance_for_schema({"type": "object", "properties": {...}}, rng, messages)
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

from simulator.tokens import count_tokens, message_text

_TICKET_ID = re.compile(r"^\s*Ticket ID:\s*(\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)
_SUBJECT = re.compile(r"^\s*Subject:\s*(\S.*?)\s*$", re.MULTILINE | re.IGNORECASE)

_GREETINGS = ("Hi there,", "Hello,", "Hi,", "Good day,", "Hello and thanks for writing in,")
_OPENERS_WITH_SUBJECT = (
    'Thanks for contacting us about "{subject}"{ref}.',
    'Thank you for your message regarding "{subject}"{ref}.',
    'I am sorry to hear about "{subject}"{ref}, and I am happy to help.',
    'I have reviewed your request "{subject}"{ref}.',
)
_OPENERS_PLAIN = (
    "Thanks for contacting support{ref}.",
    "Thank you for reaching out{ref}; I am happy to help.",
    "I have reviewed your request{ref}.",
)
_TOPIC_SENTENCES = {
    ("log in", "login", "password", "sign in", "2fa", "locked"): (
        "Please clear your browser cache and cookies, then sign in again using a private window.",
        ("If you reset your password recently, the old sessions are signed out; "
         "use the newest reset link only."),
        ("Two-factor codes expire after thirty seconds, so check that your phone's clock is set "
         "automatically."),
    ),
    ("bill", "charge", "invoice", "refund", "payment", "subscription"): (
        "I can see the charge you mentioned and have passed it to our billing team for review.",
        "Refunds are returned to the original payment method within five to ten business days.",
        "You can download every invoice from the Billing page under Account Settings.",
    ),
    ("slow", "crash", "error", "bug", "broken", "not working", "fails"): (
        ("Our engineers are aware of an issue that matches your description and are working on "
         "a fix."),
        ("Updating to the latest version of the app resolves most of the crashes we have seen "
         "this week."),
        "If the error persists, please send us a screenshot and the time it happened.",
    ),
}
_GENERAL_SENTENCES = (
    "I have added a note to your account so that anyone on the team can pick this up.",
    "Could you confirm the email address associated with your account?",
    "In the meantime, our help center has a step-by-step guide that covers this case.",
    "I have escalated this to the responsible team and asked them to prioritise it.",
    "Please let me know whether the steps above solve the problem for you.",
    "If you have any screenshots or error messages, attaching them to this ticket helps a lot.",
    "We usually resolve requests like this within one business day.",
    "There is nothing else you need to do right now; we will update this ticket as we progress.",
    "I have checked our status page and there are no ongoing incidents affecting your region.",
    "Restarting the device and trying again often clears a temporary state on our side.",
    "Your data is safe and nothing has been lost.",
    "I would also recommend reviewing the notification settings on your profile page.",
)
_CLOSINGS = ("Best regards,\nSupport Team", "Kind regards,\nThe Support Team",
             "Thanks for your patience,\nCustomer Support", "All the best,\nSupport")
_WORDS = ("account", "billing", "login", "access", "update", "refund", "order", "shipping",
          "device", "settings", "network", "report", "priority", "customer", "feature")
_CATEGORY_WORDS = ("account", "billing", "technical", "shipping", "general")
# (sentence, word count) pairs, counted once at import rather than per reply.
_GENERAL_COUNTED = tuple((s, len(s.split())) for s in _GENERAL_SENTENCES)
_TOPIC_COUNTED = tuple((keywords, tuple((s, len(s.split())) for s in sentences))
                       for keywords, sentences in _TOPIC_SENTENCES.items())


def request_key(model: str, messages: Sequence[Any]) -> str:
    """Returns a stable hex digest identifying a request by its model and messages.

    Args:
        model: The requested model name.
        messages: The request's messages, as decoded from JSON.

    Returns:
        A SHA-256 hex digest; equal requests give equal keys in every process.
    """
    canonical = json.dumps([model, messages], sort_keys=True, separators=(",", ":"),
                           ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def content_rng(key: str, seed: Any) -> random.Random:
    """Returns the random source for one reply, derived from the request key and request seed.

    Args:
        key: From ``request_key``.
        seed: The request's ``seed`` field (None when absent).

    Returns:
        A ``random.Random`` seeded by a digest, so it is the same in every process.
    """
    digest = hashlib.sha256(f"{key}:{seed!r}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def parse_ticket(messages: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """Finds the ticket id and subject in the last message that has them.

    Args:
        messages: Chat messages; the pipeline's user message contains lines like
            "Ticket ID: T-000123" and "Subject: Cannot log in".

    Returns:
        (ticket_id, subject), each "" when absent.
    """
    ticket_id = subject = ""
    for message in reversed(messages):
        text = message_text(message.get("content"))
        if not ticket_id and (match := _TICKET_ID.search(text)):
            ticket_id = match.group(1)
        if not subject and (match := _SUBJECT.search(text)):
            subject = match.group(1)
        if ticket_id and subject:
            break
    return ticket_id, subject


def _pick(rng: random.Random, options: Sequence[Any]) -> Any:
    # rng.random() is several times cheaper than rng.choice()/randrange() on the hot path.
    return options[int(rng.random() * len(options))]


def support_reply(messages: Sequence[Mapping[str, Any]], rng: random.Random) -> str:
    """Returns a support-style reply of 40 to 160 words that quotes the ticket when it can.

    Args:
        messages: The request's messages.
        rng: From ``content_rng``; the reply is a function of its state.

    Returns:
        The reply text.
    """
    ticket_id, subject = parse_ticket(messages)
    ref = f" (ticket {ticket_id})" if ticket_id else ""
    if subject:
        opener = _pick(rng, _OPENERS_WITH_SUBJECT).format(subject=subject, ref=ref)
    else:
        opener = _pick(rng, _OPENERS_PLAIN).format(ref=ref)
    haystack = (subject or message_text(messages[-1].get("content")) if messages else "").lower()
    pool = list(_GENERAL_COUNTED)
    for keywords, sentences in _TOPIC_COUNTED:
        if any(word in haystack for word in keywords):
            pool = list(sentences) + pool
            break
    target = 40 + int(rng.random() * 121)
    closing = _pick(rng, _CLOSINGS)
    sentences = [opener]
    words = len(opener.split()) + len(closing.split()) + 2
    while words < target:
        if not pool:
            pool = list(_GENERAL_COUNTED)
        # Topic sentences lead the pool; keep them near the front but not always in order.
        sentence, count = pool.pop(int(rng.random() * min(3, len(pool))))
        sentences.append(sentence)
        words += count
    return f"{_pick(rng, _GREETINGS)}\n\n{' '.join(sentences)}\n\n{closing}"


def truncate_to_tokens(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cuts ``text`` to at most ``max_tokens`` tokens (as ``count_tokens`` counts them).

    Args:
        text: The full reply.
        max_tokens: The output token cap.

    Returns:
        (text, truncated): the possibly shortened text and whether it was cut.
    """
    if count_tokens(text) <= max_tokens:
        return text, False
    return text[: max_tokens * 4], True


def json_object_reply(messages: Sequence[Mapping[str, Any]], rng: random.Random) -> dict[str, Any]:
    """Returns a JSON object reply for ``response_format={"type": "json_object"}``."""
    ticket_id, subject = parse_ticket(messages)
    return {
        "ticket_id": ticket_id or None,
        "subject": subject or None,
        "category": rng.choice(_CATEGORY_WORDS),
        "priority": rng.choice(("low", "normal", "high")),
        "reply": support_reply(messages, rng),
    }


def instance_for_schema(schema: Mapping[str, Any], rng: random.Random,
                        messages: Sequence[Mapping[str, Any]] = ()) -> Any:
    """Returns a value valid against a JSON schema of the kind OpenAI's structured outputs accept.

    Supports objects (every property is filled in), strings (minLength, maxLength, a few formats),
    enum, const, numbers and integers (minimum, maximum, exclusive bounds), booleans, null, arrays
    (items, minItems, maxItems), type lists such as ["string", "null"] (the first non-null type),
    anyOf/oneOf (the first branch), allOf (merged) and local ``$ref`` into ``$defs``. ``pattern``
    is not honoured.

    Args:
        schema: The JSON schema (the ``schema`` of a ``json_schema`` response format).
        rng: The random source for choices and lengths.
        messages: The request's messages, used to fill fields such as ``ticket_id`` or ``summary``.

    Returns:
        A JSON-serialisable value.
    """
    ticket_id, subject = parse_ticket(messages) if messages else ("", "")
    generator = _SchemaGenerator(schema, rng, ticket_id, subject)
    return generator.generate(schema, name="", depth=0)


def invalid_instance_text(valid_text: str, schema: Mapping[str, Any] | None, attempt: int) -> str:
    """Returns content that is NOT valid for the requested structured output.

    Even attempts (0, 2, ...) get the valid text cut in half, which is not JSON at all; odd
    attempts get well-formed JSON of the wrong type for the schema's root, so both a parse check
    and a schema check are exercised.

    Args:
        valid_text: The valid JSON text the reply would otherwise have been.
        schema: The requested schema, or None for ``json_object`` / plain text.
        attempt: The zero-based number of this invalid attempt.

    Returns:
        The invalid content.
    """
    if attempt % 2 == 0 or schema is None:
        return valid_text[: max(1, len(valid_text) // 2)]
    root_type = schema.get("type", "object")
    return "[\"invalid\"]" if root_type != "array" else "{\"invalid\": true}"


class _SchemaGenerator:
    """Walks a schema; one instance per call of ``instance_for_schema``."""

    _MAX_DEPTH = 6
    # Bounds on what a schema may ask for, so a hostile schema cannot exhaust the server.
    _MAX_ITEMS = 1000
    _MAX_LENGTH = 100_000
    _MAX_NODES = 100_000

    def __init__(self, root: Mapping[str, Any], rng: random.Random, ticket_id: str, subject: str):
        self.root = root
        self.rng = rng
        self.ticket_id = ticket_id
        self.subject = subject
        self.nodes = 0

    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while isinstance(schema, Mapping) and "$ref" in schema and seen < 32:
            ref = schema["$ref"]
            node: Any = self.root
            if isinstance(ref, str) and ref.startswith("#"):
                for part in ref.lstrip("#").split("/"):
                    if part:
                        node = node[part.replace("~1", "/").replace("~0", "~")]
            schema, seen = node, seen + 1
        return schema if isinstance(schema, Mapping) else {}

    def generate(self, schema: Any, name: str, depth: int) -> Any:
        self.nodes += 1
        if self.nodes > self._MAX_NODES:
            raise ValueError(f"the schema asks for more than {self._MAX_NODES} values")
        schema = self.resolve(schema if isinstance(schema, Mapping) else {})
        rng = self.rng
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, list) and branches:
                branch = branches[0]
                if depth >= self._MAX_DEPTH:  # prefer a branch that ends recursion
                    branch = next((b for b in branches if self.resolve(b).get("type") == "null"),
                                  branch)
                return self.generate(branch, name, depth)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            merged: dict[str, Any] = {}
            for part in schema["allOf"]:
                part = self.resolve(part)
                for key, value in part.items():
                    if key in ("properties",) and key in merged:
                        merged[key] = {**merged[key], **value}
                    elif key == "required" and key in merged:
                        merged[key] = list(merged[key]) + list(value)
                    else:
                        merged[key] = value
            rest = {k: v for k, v in schema.items() if k != "allOf"}
            return self.generate({**merged, **rest}, name, depth)
        kind = schema.get("type")
        if isinstance(kind, list):
            non_null = [k for k in kind if k != "null"]
            if not non_null or (depth >= self._MAX_DEPTH and "null" in kind):
                return None
            kind = non_null[0]
        if kind is None:
            kind = ("object" if "properties" in schema else "array" if "items" in schema
                    else "string")
        if kind == "object":
            properties = schema.get("properties") or {}
            return {key: self.generate(sub, key, depth + 1) for key, sub in properties.items()}
        if kind == "array":
            return self._array(schema, name, depth)
        if kind == "string":
            return self._string(schema, name)
        if kind == "integer":
            return self._integer(schema, name)
        if kind == "number":
            return self._number(schema, name)
        if kind == "boolean":
            return rng.random() < 0.5
        return None

    def _array(self, schema: Mapping[str, Any], name: str, depth: int) -> list[Any]:
        low = int(schema.get("minItems", 0))
        high = int(schema.get("maxItems", max(low, 3)))
        if low > self._MAX_ITEMS:
            raise ValueError(f"minItems {low} is above the simulator's limit {self._MAX_ITEMS}")
        if depth >= self._MAX_DEPTH:
            count = low
        else:
            count = self.rng.randint(max(low, min(1, high)), max(high, low))
        items = schema.get("items", {})
        values: list[Any] = []
        seen: set[str] = set()
        for _ in range(count * 4 if schema.get("uniqueItems") else count):
            if len(values) >= count:
                break
            value = self.generate(items, name, depth + 1)
            if schema.get("uniqueItems"):
                marker = json.dumps(value, sort_keys=True)
                if marker in seen:
                    continue
                seen.add(marker)
            values.append(value)
        return values

    def _string(self, schema: Mapping[str, Any], name: str) -> str:
        rng, lowered = self.rng, name.lower()
        fmt = schema.get("format")
        if fmt == "date-time":
            text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T12:00:00Z"
        elif fmt == "date":
            text = f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
        elif fmt == "email":
            text = f"{rng.choice(_WORDS)}@example.com"
        elif fmt == "uuid":
            text = (f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-"
                    f"4{rng.getrandbits(12):03x}-8{rng.getrandbits(12):03x}-"
                    f"{rng.getrandbits(48):012x}")
        elif "ticket" in lowered and "id" in lowered or lowered == "id":
            text = self.ticket_id or f"T-{rng.randint(0, 999999):06d}"
        elif lowered in ("subject", "title"):
            text = self.subject or "Support request"
        elif "category" in lowered or "topic" in lowered:
            text = rng.choice(_CATEGORY_WORDS)
        elif any(word in lowered for word in ("reply", "response", "answer", "message", "body",
                                              "summary", "reason", "explanation", "text")):
            text = " ".join(rng.sample(_GENERAL_SENTENCES, rng.randint(1, 3)))
        else:
            text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 4)))
        low = int(schema.get("minLength", 0))
        high = schema.get("maxLength")
        if low > self._MAX_LENGTH:
            raise ValueError(f"minLength {low} is above the simulator's limit {self._MAX_LENGTH}")
        while len(text) < low:
            text += " " + rng.choice(_WORDS)
        if high is not None:
            text = text[: int(high)]
        return text

    def _bounds(self, schema: Mapping[str, Any], name: str, step: float) -> tuple[float, float]:
        low = schema.get("minimum")
        high = schema.get("maximum")
        if "exclusiveMinimum" in schema and not isinstance(schema["exclusiveMinimum"], bool):
            low = schema["exclusiveMinimum"] + step
        if "exclusiveMaximum" in schema and not isinstance(schema["exclusiveMaximum"], bool):
            high = schema["exclusiveMaximum"] - step
        unit = any(word in name.lower() for word in ("confidence", "probability", "score"))
        if low is None and high is None:
            low, high = (0, 1) if unit and step < 1 else (0, 100)
        elif low is None:
            low = min(0, high)
        elif high is None:
            high = max(low, 0) + (1 if unit and step < 1 else 100)
        return low, max(low, high)

    def _integer(self, schema: Mapping[str, Any], name: str) -> int:
        low, high = self._bounds(schema, name, 1)
        low_i, high_i = -int(-low // 1), int(high // 1)  # ceil(low), floor(high)
        return self.rng.randint(low_i, max(low_i, high_i))

    def _number(self, schema: Mapping[str, Any], name: str) -> float:
        low, high = self._bounds(schema, name, 1e-6)
        value = round(self.rng.uniform(low, high), 2)
        return value if low <= value <= high else (low + high) / 2
