"""The simulator's Files API (what the Batch API reads and writes), its errors and cursor pages.

    files = FileStore(id_prefix="1a2b3c4d", ids=itertools.count(1), stats=stats)
    meta = files.upload(b'{"custom_id": ...}\\n', "requests.jsonl", "batch")
    files.get(meta["id"]).data            # the bytes
    files.list(purpose="batch", limit=10)  # {"object": "list", "data": [...], "has_more": ...}
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any

from simulator.stats import Stats

#: Purposes an upload may have (outputs of batches get "batch_output").
FILE_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
_FILE_TTL = 30 * 86_400  # batch files expire after 30 days at OpenAI


class BatchApiError(Exception):
    """A request the Files or Batch API refuses; carries the HTTP status and OpenAI's fields.

    Args:
        status: The HTTP status, e.g. 400 or 404.
        message: The error message.
        param: The parameter at fault, if any.
        code: OpenAI's error code, if any.
    """

    def __init__(self, status: int, message: str, param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


@dataclasses.dataclass
class StoredFile:
    """An uploaded file, or an output/error file a batch wrote."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int
    seq: int

    def to_json(self) -> dict[str, Any]:
        """Returns OpenAI's ``FileObject``."""
        expires = self.created_at + _FILE_TTL if self.purpose.startswith("batch") else None
        return {"id": self.id, "object": "file", "bytes": len(self.data),
                "created_at": self.created_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None, "expires_at": expires}


class FileStore:
    """Files by id; used from the server's event loop only.

    Args:
        id_prefix: Put in every id after "file-".
        ids: Sequence numbers, shared with the batches so that ids never repeat.
        stats: Receives ``files_uploaded``.
        wall_clock: Epoch seconds, for ``created_at`` of uploads.
    """

    def __init__(self, id_prefix: str, ids: Iterator[int], stats: Stats,
                 wall_clock: Callable[[], float] = time.time):
        self._prefix = id_prefix
        self._ids = ids
        self._stats = stats
        self._wall_clock = wall_clock
        self._files: dict[str, StoredFile] = {}

    def clear(self) -> None:
        """Forgets every file."""
        self._files.clear()

    def add(self, data: bytes, filename: str, purpose: str, created_at: int) -> StoredFile:
        """Stores a file (an upload or a batch's output) and returns it."""
        seq = next(self._ids)
        stored = StoredFile(f"file-{self._prefix}{seq:012d}", filename, purpose, data,
                            created_at, seq)
        self._files[stored.id] = stored
        return stored

    def upload(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        """``POST /v1/files``: stores an upload and counts it.

        Raises:
            BatchApiError: 400 for an unknown purpose, or a batch file not named ``*.jsonl``.
        """
        if purpose not in FILE_PURPOSES:
            raise BatchApiError(400, f"Invalid value for 'purpose': '{purpose}'. Expected one of "
                                     f"{', '.join(sorted(FILE_PURPOSES))}.", "purpose",
                                "invalid_value")
        if purpose == "batch" and not filename.endswith(".jsonl"):
            raise BatchApiError(400, "Invalid file format for Batch API. Must be .jsonl", "file")
        self._stats.files_uploaded += 1
        return self.add(data, filename, purpose, int(self._wall_clock())).to_json()

    def find(self, file_id: str) -> StoredFile | None:
        """The file ``file_id``, or None."""
        return self._files.get(file_id)

    def get(self, file_id: str) -> StoredFile:
        """The file ``file_id``.

        Raises:
            BatchApiError: 404 if there is none.
        """
        stored = self._files.get(file_id)
        if stored is None:
            raise BatchApiError(404, f"No such File object: {file_id}", "id")
        return stored

    def delete(self, file_id: str) -> dict[str, Any]:
        """``DELETE /v1/files/{id}``: forgets a file (batches keep what they already read).

        Raises:
            BatchApiError: 404 if there is none.
        """
        self.get(file_id)
        del self._files[file_id]
        return {"id": file_id, "object": "file", "deleted": True}

    def list(self, purpose: str | None = None, after: str | None = None, limit: int = 10_000,
             order: str = "desc") -> dict[str, Any]:
        """``GET /v1/files``: a cursor page by creation, newest first unless ``order="asc"``.

        Raises:
            BatchApiError: 400 for an ``after`` that names no listed file.
        """
        files = sorted(self._files.values(), key=lambda f: f.seq, reverse=order != "asc")
        if purpose is not None:
            files = [f for f in files if f.purpose == purpose]
        return page([f.to_json() for f in files], after, limit)


def page(items: list[Any], after: str | None, limit: int) -> dict[str, Any]:
    """A cursor page of ``items`` (dicts or objects with an ``id``): those after ``after``.

    Args:
        items: Everything listable, in list order.
        after: The id of the last item of the previous page, or None for the first page.
        limit: The most items to return.

    Returns:
        OpenAI's list shape: ``object``, ``data``, ``first_id``, ``last_id``, ``has_more``.

    Raises:
        BatchApiError: 400 for an ``after`` that names no item.
    """
    def ident(item: Any) -> str:
        return item["id"] if isinstance(item, dict) else item.id

    start = 0
    if after is not None:
        ids = [ident(item) for item in items]
        if after not in ids:
            raise BatchApiError(400, f"Invalid 'after': no object with id '{after}'.", "after",
                                "invalid_value")
        start = ids.index(after) + 1
    data = items[start:start + limit]
    return {"object": "list", "data": data,
            "first_id": ident(data[0]) if data else None,
            "last_id": ident(data[-1]) if data else None,
            "has_more": start + limit < len(items)}
