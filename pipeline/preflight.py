"""Checks made before the pipeline is built, so that a mistake costs seconds, not a failed job.

Each check raises :class:`UsageError` with ONE line saying what is wrong and how to fix it; the
driver prints it and exits with code 2. In order:

* :func:`check_input` — every ``--input`` pattern matches at least one file;
* :func:`check_output` — ``--output`` holds no earlier run's files (unless ``--overwrite`` or
  ``--resume``) and is writable (a probe file is created and deleted);
* :func:`check_endpoint` — the endpoint answers, accepts the key, has the chat route and serves
  the model, proven without spending a token: ``GET /models`` with a short timeout; if it
  answers, the model is in its list or ``GET /models/{model}`` finds it; if the server has no
  ``/models`` (404, optional on gateways), a chat request with no messages, which the route
  refuses with a 400 and a wrong path answers 404 (``--skip_preflight`` skips it all, e.g. for
  gateways that block it; the run's first requests then catch the same mistakes:
  :mod:`transforms.limits.trial`).

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
from transforms.llm.config import misconfigured_message
from transforms.llm.providers.openai import CHAT_PATH, from_openai
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


class Unreachable(UsageError):
    """The endpoint did not answer at all (down, or a wrong host)."""


def check_endpoints(llm: LlmConfig, timeout: float = ENDPOINT_TIMEOUT_SECS) -> None:
    """:func:`check_endpoint` of the job's endpoint, or of each of ``--endpoints`` (OpenAI's
    routes only: another provider's first requests are the check).

    With several endpoints, one that cannot be reached is only a warning (the router sends its
    tickets elsewhere until it is back); every one unreachable, or any wrong key, route or
    model, is an error naming the endpoint.

    Raises:
      UsageError: see :func:`check_endpoint`.
    """
    if not llm.endpoints:
        if llm.provider == "openai":
            check_endpoint(llm, timeout)
        return
    down = []
    for endpoint in llm.endpoints:
        if endpoint.provider != "openai":
            continue
        try:
            check_endpoint(endpoint, timeout)
        except Unreachable as exc:
            down.append(f"endpoint {endpoint.endpoint_name}: {exc}")
            event(_LOG, logging.WARNING, "preflight_endpoint_down",
                  endpoint=endpoint.endpoint_name, note="its tickets go to the others")
        except UsageError as exc:
            raise UsageError(f"endpoint {endpoint.endpoint_name}: {exc}") from None
    if len(down) == len(llm.endpoints):
        raise UsageError("no endpoint of --endpoints can be reached: " + "; ".join(down))


def check_endpoint(llm: LlmConfig, timeout: float = ENDPOINT_TIMEOUT_SECS) -> None:
    """The endpoint answers, accepts the key, has the chat route and serves the model.

    ``GET /models``; when it answers, the model must be listed, or ``GET /models/{model}`` must
    not answer 404; when the server has no ``/models`` (404), one chat request with an empty
    ``messages`` (nothing to bill: the route refuses it with a 400) must not answer 404 either.
    A 429 or a 5xx is not the configuration's fault: a warning is logged and the run goes on (its
    own retries deal with them), as it does when a check proves nothing.

    Raises:
      UsageError: the endpoint cannot be reached, rejects the key (401/403), has no chat route
        at this base URL, or does not serve the model (404).
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
        listed = client.models.list()
        _check_model(client, llm, [m.id for m in listed.data], key)
    except openai.NotFoundError:
        # No /models here: optional on gateways, or a wrong path. The chat route tells which.
        _check_chat_route(client, llm, key)
    except openai.AuthenticationError:
        raise UsageError(f"the endpoint {where} rejected the API key (HTTP 401): "
                         f"{how_key}.") from None
    except openai.PermissionDeniedError:
        raise UsageError(f"the endpoint {where} refused the API key access (HTTP 403): "
                         f"{how_key}, one allowed to use the model API.") from None
    except openai.APITimeoutError:
        raise Unreachable(f"the endpoint {where} did not answer within {timeout:g} s: check "
                         "--base_url and that the server is up (or pass --skip_preflight)."
                         ) from None
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        detail = errors.redact(f"{type(cause).__name__}: {cause}", [key])[:200]
        raise Unreachable(f"cannot reach the endpoint {where} ({detail}): check --base_url and "
                         "that the server is running (or pass --skip_preflight).") from None
    except openai.APIStatusError as exc:
        event(_LOG, logging.WARNING, "preflight_endpoint_status", endpoint=where,
              http_status=exc.status_code, note="GET /models failed; continuing")
    finally:
        client.close()


def _check_model(client: openai.OpenAI, llm: LlmConfig, listed: List[str], key: str) -> None:
    """The model is listed, or ``GET /models/{model}`` finds it. Some servers list only some of
    their models, others have no ``/models/{id}`` (a 404 of the route, not of the model): only
    both together, or a 404 that says ``model_not_found``, prove the model wrong."""
    if llm.model in listed:
        return
    try:
        client.models.retrieve(llm.model)
    except openai.NotFoundError as exc:
        if listed or exc.code == "model_not_found":
            shown = ", ".join(listed[:8]) + (", ..." if len(listed) > 8 else "")
            err = errors.ModelNotFound(f"{exc.message} (it lists {shown or 'no model'})",
                                       status=404)
            raise UsageError(misconfigured_message(
                llm, err, f"GET /models/{llm.model}", [key])) from None
        _LOG.debug("GET /models/%s: 404 without model_not_found; not proof", llm.model)
    except openai.APIStatusError as exc:
        event(_LOG, logging.WARNING, "preflight_endpoint_status", endpoint=llm.base_url,
              http_status=exc.status_code, note=f"GET /models/{llm.model} failed; continuing")


def _check_chat_route(client: openai.OpenAI, llm: LlmConfig, key: str) -> None:
    """The chat route is there: a request with no messages gets a 400 (or 422) from it, and a
    404 only where it is missing (or the model is not served). Nothing is generated or billed."""
    try:
        client.chat.completions.create(model=llm.model, messages=[], max_tokens=1)
    except openai.NotFoundError as exc:
        raise UsageError(misconfigured_message(llm, from_openai(exc, [key]),
                                               f"POST {CHAT_PATH}", [key])) from None
    except (openai.BadRequestError, openai.UnprocessableEntityError):
        return  # the route read the request and refused it: it is there
    except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
        raise UsageError(misconfigured_message(llm, from_openai(exc, [key]),
                                               f"POST {CHAT_PATH}", [key])) from None
    except openai.APIError as exc:
        event(_LOG, logging.WARNING, "preflight_endpoint_status", endpoint=llm.base_url,
              http_status=getattr(exc, "status_code", None),
              note=f"GET /models: 404, POST {CHAT_PATH} proved nothing; continuing")
