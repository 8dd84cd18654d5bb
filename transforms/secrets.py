"""Reading the API key from Google Secret Manager, on the worker, without ever logging it.

``--api_key_secret projects/P/secrets/S/versions/V`` names a secret version; each worker reads it
in ``setup()`` (``transforms.llm.resolve_api_key``), so the key never travels in the job's
options, its pickled DoFns or its logs. The workers' service account needs
``roles/secretmanager.secretAccessor`` on the secret.

``google-cloud-secret-manager`` comes with ``apache-beam[gcp]``; it is imported only when a secret
is read, so local runs without it still work. The client is made by an injectable factory, so
tests pass a fake instead of a mock.

Example::

    key = resolve_secret("projects/my-project/secrets/openai-key/versions/latest")
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

# Project id (6-30 chars) or project number; secret id (1-255 of [A-Za-z0-9_-]); version number
# or "latest". templates/metadata.json uses the same expression (a test keeps them equal).
SECRET_VERSION_PATTERN = re.compile(
    r"^projects/([a-z][-a-z0-9]{4,28}[a-z0-9]|[0-9]+)/secrets/([A-Za-z0-9_-]{1,255})"
    r"/versions/([1-9][0-9]*|latest)$")

_MAX_ERROR_CHARS = 300


class SecretError(Exception):
    """The secret cannot be read; the message says why and never holds the secret's value."""


class SecretVersionName(NamedTuple):
    """The parts of ``projects/P/secrets/S/versions/V``."""
    project: str
    secret: str
    version: str


def parse_secret_version(name: str) -> SecretVersionName:
    """Checks and splits a secret version's resource name.

    Args:
      name: ``projects/PROJECT/secrets/SECRET/versions/VERSION`` (VERSION a number or ``latest``).

    Returns:
      The project, secret and version.

    Raises:
      SecretError: when ``name`` is not such a name.
    """
    match = SECRET_VERSION_PATTERN.match(name or "")
    if not match:
        raise SecretError(
            f"--api_key_secret {name!r} is not a secret version name: use "
            "projects/PROJECT/secrets/SECRET/versions/VERSION (VERSION a number or latest), "
            "e.g. projects/my-project/secrets/openai-key/versions/latest")
    return SecretVersionName(*match.groups())


def default_client_factory() -> Any:
    """A ``SecretManagerServiceClient`` with the environment's credentials.

    Raises:
      SecretError: when ``google-cloud-secret-manager`` is not installed.
    """
    try:
        from google.cloud import secretmanager  # pylint: disable=import-outside-toplevel
    except ImportError:
        raise SecretError(
            "reading --api_key_secret needs the google-cloud-secret-manager package (installed "
            "by apache-beam[gcp]): pip install google-cloud-secret-manager") from None
    return secretmanager.SecretManagerServiceClient()


def _close(client: Any) -> None:
    transport = getattr(client, "transport", None)
    close = getattr(transport, "close", None)
    if callable(close):
        try:
            close()
        except Exception:  # noqa: BLE001, S110 - closing is best effort
            pass


def _check_crc32c(data: bytes, expected: Any, name: str) -> None:
    if not expected:
        return
    try:
        import google_crc32c  # pylint: disable=import-outside-toplevel
    except ImportError:
        return  # the checksum is a bonus; the key is usable without it
    if int(google_crc32c.value(data)) != int(expected):
        raise SecretError(f"secret {name}: the payload's CRC32C does not match (corrupted "
                          "in transit); retry the job")


def resolve_secret(name: str, client_factory: Callable[[], Any] = default_client_factory,
                   timeout: float = 30.0) -> str:
    """Reads a secret version and returns its value as text (surrounding whitespace stripped).

    Args:
      name: ``projects/P/secrets/S/versions/V``.
      client_factory: Makes a client with ``access_secret_version(request=..., timeout=...)``.
      timeout: Seconds for the call.

    Returns:
      The secret's value.

    Raises:
      SecretError: bad name, missing package, access denied, not found, empty or non-UTF-8
        payload. The message names the secret, never its value.
    """
    parse_secret_version(name)
    client = client_factory()
    try:
        try:
            response = client.access_secret_version(request={"name": name}, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - every failure becomes one clear SecretError
            detail = " ".join(str(exc).split())[:_MAX_ERROR_CHARS]
            hint = ""
            lowered = f"{type(exc).__name__} {detail}".lower()
            if "permission" in lowered or "403" in lowered:
                hint = (" (grant the workers' service account "
                        "roles/secretmanager.secretAccessor on the secret)")
            elif "notfound" in lowered or "not found" in lowered or "404" in lowered:
                hint = " (check the project, the secret's name and that the version exists)"
            raise SecretError(f"cannot read secret {name}: {type(exc).__name__}: "
                              f"{detail}{hint}") from None
    finally:
        _close(client)
    payload = getattr(response, "payload", None)
    data = getattr(payload, "data", None)
    if not isinstance(data, (bytes, bytearray)):
        raise SecretError(f"secret {name}: the response holds no payload data")
    _check_crc32c(bytes(data), getattr(payload, "data_crc32c", None), name)
    try:
        value = bytes(data).decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretError(f"secret {name}: the value is not UTF-8 text") from None
    if not value:
        raise SecretError(f"secret {name}: the value is empty")
    return value
