"""The response store: every paid answer is kept, so no request is ever paid twice.

Each successful response is written under a key derived from the model, the messages and the
generation parameters, right after it returns and before the result leaves the DoFn. Before
calling, the engine looks the key up; a hit costs nothing. This is what survives Beam bundle
retries, crashes (a SIGKILLed run leaves no result shards, since Beam finalizes files at the end,
but every answer it paid for is in the store) and reruns.

Layout: ``STORE/ab/abcdef....json`` (first two hex digits as a directory), one small JSON
document per response. Local paths are written atomically (temp file + rename); ``gs://`` objects
are atomic on close. A corrupt or unreadable entry is a miss, never an error.

Example::

    store = ResponseStore("gs://bucket/ticketflow-store")
    key = request_key({"model": "gpt-4o-mini", "messages": [...], "max_tokens": 256})
    store.get(key) or store.put(key, {...})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from typing import Any, Dict, Mapping, Optional

_LOG = logging.getLogger(__name__)

# Parameters that change the answer; timeouts and the like do not belong in the key.
KEY_FIELDS = ("model", "messages", "temperature", "max_tokens", "response_format", "seed", "top_p")


def request_key(request: Mapping[str, Any]) -> str:
    """A stable hex key for a chat request (model, messages and generation parameters)."""
    material = {name: request.get(name) for name in KEY_FIELDS if request.get(name) is not None}
    blob = json.dumps(material, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseStore:
    """A directory of stored responses, local or on any Beam filesystem (gs://).

    Args:
      root: The store's directory.
    """

    def __init__(self, root: str):
        self.root = root.rstrip("/")
        self._local = "://" not in self.root
        if self._local:
            os.makedirs(self.root, exist_ok=True)

    def path(self, key: str) -> str:
        return f"{self.root}/{key[:2]}/{key}.json"

    def get(self, key: str) -> Optional[Dict[str, Any]]:
        """The stored response for ``key``, or None (missing, unreadable or corrupt)."""
        path = self.path(key)
        try:
            if self._local:
                with open(path, "rb") as handle:
                    data = handle.read()
            else:
                from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
                if not FileSystems.exists(path):
                    return None
                with FileSystems.open(path) as handle:
                    data = handle.read()
            record = json.loads(data.decode("utf-8"))
            return record if isinstance(record, dict) and "content" in record else None
        except FileNotFoundError:
            return None
        except Exception as exc:  # noqa: BLE001 - a bad entry is a miss, the call is made again
            _LOG.warning("response store: ignoring unreadable entry %s (%s)", path,
                         type(exc).__name__)
            return None

    def put(self, key: str, record: Mapping[str, Any]) -> None:
        """Stores ``record`` under ``key`` durably (atomic rename locally)."""
        path = self.path(key)
        data = json.dumps(record, ensure_ascii=False).encode("utf-8")
        if self._local:
            directory = os.path.dirname(path)
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".json")
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp, path)
            except BaseException:
                if os.path.exists(tmp):
                    os.unlink(tmp)
                raise
            return
        from apache_beam.io.filesystems import FileSystems  # pylint: disable=import-outside-toplevel
        with FileSystems.create(path, mime_type="application/json") as handle:
            handle.write(data)
