"""``--endpoints FILE``: one job spread over several deployments, read and checked here.

The file is YAML with one list under ``endpoints:``; each entry names one deployment::

    endpoints:
      - name: east
        base_url: https://east.example/v1
        model: gpt-4o-mini
        api_key_env: EAST_KEY
        requests_per_minute: 600
        tokens_per_minute: 200000
        max_concurrency: 32        # or auto
      - name: cheap
        base_url: https://other.example/v1
        model: gpt-4o-mini
        role: fallback             # used only while every primary is out

Every mistake is one :class:`EndpointsFileError` whose message names the file and the line at
fault (PyYAML's node marks), so the driver exits 2 with it.

Example::

    entries = load_endpoints("examples/endpoints.yaml")   # List[EndpointEntry]
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, List, Optional

import yaml

from transforms.llm.providers import PROVIDERS

PRIMARY = "primary"
FALLBACK = "fallback"
ROLES = (PRIMARY, FALLBACK)
AUTO = "auto"

# Names become counter and column names: keep them plain.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,39}$")
_URL = re.compile(r"^https?://\S+$")
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_KEYS = ("name", "base_url", "model", "provider", "api_key_env", "requests_per_minute",
         "tokens_per_minute", "max_concurrency", "quota_key", "role")


class EndpointsFileError(ValueError):
    """The endpoints file is not valid; the message names the file and the line."""


@dataclasses.dataclass(frozen=True)
class EndpointEntry:
    """One entry of the file, checked (``None``: the job's flag applies).

    Attributes:
      max_concurrency: A number, ``"auto"``, or None.
      line: The entry's 1-based line in the file.
    """
    name: str
    base_url: Optional[str]
    model: Optional[str]
    provider: Optional[str]
    api_key_env: Optional[str]
    requests_per_minute: Optional[float]
    tokens_per_minute: Optional[float]
    max_concurrency: Any
    quota_key: Optional[str]
    role: str
    line: int


def load_endpoints(path: str) -> List[EndpointEntry]:
    """Reads and checks an endpoints file.

    Raises:
      EndpointsFileError: unreadable, not YAML, or an entry at fault (its line in the message).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise EndpointsFileError(f"--endpoints {path}: cannot read it ({exc.strerror})") from None
    return parse_endpoints(text, path)


def parse_endpoints(text: str, path: str = "<endpoints>") -> List[EndpointEntry]:
    """Checks the text of an endpoints file (see :func:`load_endpoints`)."""
    def fail(node, message: str) -> EndpointsFileError:
        line = node.start_mark.line + 1 if node is not None else 1
        return EndpointsFileError(f"--endpoints {path}, line {line}: {message}")

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise EndpointsFileError(f"--endpoints {path}, line {line}: not valid YAML "
                                 f"({problem})") from None
    if not isinstance(root, yaml.MappingNode):
        raise fail(root, "expected a mapping with one key, 'endpoints:' (a list of endpoints)")
    listing = None
    for key, value in root.value:
        if key.value != "endpoints":
            raise fail(key, f"unknown key {key.value!r}: the file holds only 'endpoints:'")
        listing = value
    if listing is None:
        raise fail(root, "no 'endpoints:' list")
    if not isinstance(listing, yaml.SequenceNode) or not listing.value:
        raise fail(listing, "'endpoints:' must be a non-empty list of endpoints")
    entries = [_entry(node, index, fail) for index, node in enumerate(listing.value)]
    seen = {}
    for entry, node in zip(entries, listing.value):
        if entry.name in seen:
            raise fail(node, f"the name {entry.name!r} is already used on line "
                             f"{seen[entry.name]}; each endpoint needs its own")
        seen[entry.name] = entry.line
    if not any(e.role == PRIMARY for e in entries):
        raise fail(listing, "every endpoint is a fallback: at least one must be 'role: primary'")
    return entries


def _entry(node, index: int, fail) -> EndpointEntry:
    if not isinstance(node, yaml.MappingNode):
        raise fail(node, f"endpoint {index + 1} must be a mapping (base_url:, model:, ...)")
    fields = {}
    nodes = {}
    for key, value in node.value:
        name = key.value
        if name not in _KEYS:
            raise fail(key, f"unknown key {name!r} (known: {', '.join(_KEYS)})")
        if name in fields:
            raise fail(key, f"{name!r} is given twice")
        if not isinstance(value, yaml.ScalarNode):
            raise fail(value, f"{name!r} must be a single value")
        fields[name] = yaml.constructor.SafeConstructor().construct_object(value)
        nodes[name] = value

    def text(name: str, pattern=None, what: str = "") -> Optional[str]:
        value = fields.get(name)
        if value is None:
            return None
        if not isinstance(value, str) or not value or (pattern and not pattern.match(value)):
            raise fail(nodes[name], f"{name} must be {what or 'a non-empty string'}, got "
                                    f"{value!r}")
        return value

    def number(name: str, allow_auto: bool = False):
        value = fields.get(name)
        if value is None:
            return None
        if allow_auto and value == AUTO:
            return AUTO
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                name == "max_concurrency" and (value < 1 or value != int(value))):
            want = ("a whole number >= 1 or 'auto'" if allow_auto else "a number >= 0")
            raise fail(nodes[name], f"{name} must be {want}, got {value!r}")
        return int(value) if name == "max_concurrency" else float(value)

    base_url = text("base_url", _URL, "an http(s):// URL")
    name = fields.get("name")
    if name is None:
        name = f"endpoint{index + 1}"
    elif not isinstance(name, str) or not _NAME.match(name):
        raise fail(nodes["name"], f"name must be letters, digits, '_', '-' or '.' (at most 40), "
                                  f"got {name!r}")
    provider = text("provider")
    if provider is not None and provider not in PROVIDERS[:2]:
        raise fail(nodes["provider"], f"provider must be one of openai, anthropic, got "
                                      f"{provider!r}")
    role = text("role") or PRIMARY
    if role not in ROLES:
        raise fail(nodes["role"], f"role must be primary or fallback, got {role!r}")
    return EndpointEntry(
        name=name, base_url=base_url, model=text("model"), provider=provider,
        api_key_env=text("api_key_env", _ENV, "an environment variable's name"),
        requests_per_minute=number("requests_per_minute"),
        tokens_per_minute=number("tokens_per_minute"),
        max_concurrency=number("max_concurrency", allow_auto=True),
        quota_key=text("quota_key"), role=role, line=node.start_mark.line + 1)


def concurrency_of(value: Any, base) -> dict:
    """An endpoint's window: its number, ``auto`` (its own adaptive controller,
    :mod:`transforms.limits.concurrency`), or the job's ``--max_concurrency`` (None).

    Returns:
      The ``LlmConfig`` fields: ``max_concurrency`` and ``adaptive_concurrency``.
    """
    from transforms.limits.concurrency import (  # pylint: disable=import-outside-toplevel
        concurrency_setting)
    if value is None:
        return {"max_concurrency": base.max_concurrency,
                "adaptive_concurrency": base.adaptive_concurrency}
    ceiling, adaptive = concurrency_setting(str(value))
    return {"max_concurrency": ceiling, "adaptive_concurrency": adaptive}


def endpoint_configs(entries: List[EndpointEntry], base, *, share: float, pricing,
                     key_for: Callable[[str, Optional[str], str], Optional[str]]) -> tuple:
    """Each entry as an ``LlmConfig`` of its own, from the job's (``base``) and the entry.

    Args:
      base: The job's ``LlmConfig`` (what an entry leaves out comes from it).
      share: This worker process's share of each endpoint's limits.
      pricing: The price list (each endpoint is priced by its own model).
      key_for: ``(api_key_env, base_url, endpoint) -> public key or None``; raises when the
        endpoint has no key.
    """
    from transforms.llm.providers import provider_of  # pylint: disable=import-outside-toplevel
    out = []
    for e in entries:
        model = e.model or base.model
        provider = provider_of(model, e.provider)
        api_key_env = e.api_key_env or (
            "ANTHROPIC_API_KEY" if provider == "anthropic" and base.api_key_env ==
            "OPENAI_API_KEY" else base.api_key_env)
        base_url = e.base_url or base.base_url
        public_key = key_for(api_key_env, base_url, e.name)
        rpm = e.requests_per_minute if e.requests_per_minute is not None else (
            base.job_requests_per_sec * 60.0)
        tpm = e.tokens_per_minute if e.tokens_per_minute is not None else (
            base.job_tokens_per_sec * 60.0)
        out.append(dataclasses.replace(
            base, base_url=base_url, model=model, provider=provider, api_key_env=api_key_env,
            public_api_key=public_key, api_key_secret=None if public_key else base.api_key_secret,
            **concurrency_of(e.max_concurrency, base),
            worker_requests_per_sec=rpm * share / 60.0, worker_tokens_per_sec=tpm * share / 60.0,
            job_requests_per_sec=rpm / 60.0, job_tokens_per_sec=tpm / 60.0,
            quota_key=e.quota_key or (f"{base.quota_key}|{e.name}" if base.quota_key else None),
            price=pricing.lookup(model)[0], endpoint_name=e.name, endpoint_role=e.role,
            endpoints=()))
    return tuple(out)


def describe(endpoints) -> List[dict]:
    """What differs from endpoint to endpoint, safe to log (the config dump of ``summary.json``).
    """
    from transforms.errors import redact_url  # pylint: disable=import-outside-toplevel
    return [{"name": e.endpoint_name, "role": e.endpoint_role,
             "base_url": redact_url(e.base_url) if e.base_url else None, "model": e.model,
             "provider": e.provider, "api_key_env": e.api_key_env,
             "requests_per_minute": e.job_requests_per_sec * 60.0,
             "tokens_per_minute": e.job_tokens_per_sec * 60.0,
             "max_concurrency": e.max_concurrency, "quota_key": e.quota_key}
            for e in endpoints]
