"""Checks made before the pipeline is built, so that a mistake costs seconds, not a failed job.

Each check raises :class:`UsageError` with ONE line saying what is wrong and how to fix it; the
driver prints it and exits with code 2. In order:

* :func:`check_input` — every ``--input`` pattern matches at least one file;
* :func:`check_output` — ``--output`` holds no earlier run's files (unless ``--overwrite`` or ``--resume``) and is
  writable (a probe file is created and deleted);
* :func:`check_endpoint` — the endpoint answers and accepts the key: one cheap ``GET /models``
  with a short timeout (``--skip_preflight`` skips it, e.g. for gateways that block it).

Example::

    check_input(config); check_output(config); check_endpoint(config.llm)
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import List

import openai
from apache_beam.io.filesystems import FileSystems

from pipeline import config as config_lib
from pipeline.outputs import existing_outputs
from transforms import errors, sinks
from transforms.llm import LlmConfig, resolve_api_key
from transforms.logs import event

_LOG = logging.getLogger("ticketflow")

ENDPOINT_TIMEOUT_SECS = 10.0
_OPENAI_URL = "https://api.openai.com/v1"


class UsageError(Exception):
    """Something to fix before the job can run; exit code 2."""


def check_input(config: config_lib.JobConfig) -> None:
    """Every comma-separated ``--input`` pattern matches at least one file.

    Raises:
      UsageError: a pattern cannot be listed or matches nothing.
    """
    patterns = [p.strip() for p in config.input.split(",") if p.strip()]
    for pattern in patterns:
        try:
            matched = FileSystems.match([pattern])[0].metadata_list
        except Exception as exc:  # noqa: BLE001 - any filesystem error is the user's to fix
            raise UsageError(f"--input {pattern!r}: cannot list it ({type(exc).__name__}: "
                             f"{str(exc)[:200]})") from None
        if not matched:
            raise UsageError(f"--input {pattern!r} matches no file: check the path or glob "
                             "(quote globs so the shell does not expand them).")


def check_output(config: config_lib.JobConfig) -> List[str]:
    """``--output`` is free of an earlier run's files (or ``--overwrite``) and writable.

    Returns:
      The earlier run's files to delete once every check has passed (``--overwrite``).

    Raises:
      UsageError: earlier outputs without ``--overwrite``, or the prefix is not writable.
    """
    existing = existing_outputs(config.output)
    if existing and config.resume:
        existing = []  # --resume continues the earlier run: its files stay
    elif existing and not config.overwrite:
        raise UsageError(
            f"--output {config.output!r} already holds {len(existing)} output file(s) of an "
            "earlier run: pass --resume to continue it (skipping answered tickets), "
            "--overwrite to replace it, or choose another --output.")
    _probe_writable(config.output)
    return existing


def _probe_writable(prefix: str) -> None:
    probe = sinks.join_path(prefix, f".ticketflow-preflight-{uuid.uuid4().hex[:12]}")
    local = FileSystems.get_scheme(prefix) is None
    # Local directories the probe creates are removed again, so a failed preflight leaves nothing.
    created: List[str] = []
    if local:
        path = os.path.abspath(prefix)
        while path and not os.path.exists(path):
            created.append(path)
            path = os.path.dirname(path)
    try:
        with FileSystems.create(probe) as handle:
            handle.write(b"ticketflow preflight probe\n")
        FileSystems.delete([probe])
    except Exception as exc:  # noqa: BLE001 - any filesystem error is the user's to fix
        cause = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise UsageError(
            f"--output {prefix!r} is not writable ({cause[:200]}): choose a directory you can "
            "create files in, or fix its permissions.") from None
    finally:
        for path in created:  # deepest first
            try:
                os.rmdir(path)
            except OSError:
                break


def check_endpoint(llm: LlmConfig, timeout: float = ENDPOINT_TIMEOUT_SECS) -> None:
    """The endpoint answers ``GET /models`` and accepts the key.

    A 404 (servers without ``/models``), a 429 or a 5xx are not the configuration's fault: a
    warning is logged and the run goes on (its own retries deal with them).

    Raises:
      UsageError: the endpoint cannot be reached, or it rejects the key (401/403).
    """
    where = llm.base_url or _OPENAI_URL
    try:
        key = resolve_api_key(llm)
    except errors.AuthFailed:
        raise UsageError(f"no API key: set the environment variable {llm.api_key_env}.") from None
    how_key = (f"set {llm.api_key_env} to a valid key for this endpoint (or name another "
               "variable with --api_key_env)")
    client = openai.OpenAI(api_key=key, base_url=llm.base_url, max_retries=0, timeout=timeout)
    try:
        client.models.list()
    except openai.AuthenticationError:
        raise UsageError(f"the endpoint {where} rejected the API key (HTTP 401): "
                         f"{how_key}.") from None
    except openai.PermissionDeniedError:
        raise UsageError(f"the endpoint {where} refused the API key access (HTTP 403): "
                         f"{how_key}, one allowed to use the model API.") from None
    except openai.APITimeoutError:
        raise UsageError(f"the endpoint {where} did not answer within {timeout:g} s: check "
                         "--base_url and that the server is up (or pass --skip_preflight)."
                         ) from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        detail = errors.redact(f"{type(cause).__name__}: {cause}", [key])[:200]
        raise UsageError(f"cannot reach the endpoint {where} ({detail}): check --base_url and "
                         "that the server is running (or pass --skip_preflight).") from None
    except openai.APIStatusError as exc:
        event(_LOG, logging.WARNING, "preflight_endpoint_status", endpoint=where,
              http_status=exc.status_code, note="GET /models failed; continuing")
    finally:
        client.close()
