"""Compact sets of ticket ids: 8-byte hashes in a sorted numpy array, kept in a file.

A chunked run (``pipeline/chunks.py``) must know, while it validates one chunk, which ids the
earlier chunks already kept (those are ``duplicate_id``) and which ids earlier runs answered
(``--resume``: ``already_done``), without a shuffle over the whole input. A Python set of 10M
id strings takes about 1 GB; the 8-byte hashes of the same ids, sorted in a ``uint64`` array,
take 80 MB, and a DoFn memory-maps the file (``numpy.load(mmap_mode="r")``) instead of
unpickling it: its pages are shared with the page cache and only the ones a lookup touches
are read.

Collisions: two different ids share a hash with probability about n² / 2⁶⁵ over n ids
(10M ids: 3·10⁻⁶); such an id would be taken for a duplicate of the other.

Example::

    save_hashes(path, hash_ids(["T-1", "T-2"]))
    known = IdHashSet.load(path)
    "T-1" in known, "T-3" in known    # True, False
    save_hashes(path, union(known.hashes, hash_ids(["T-3"])))
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Iterable, Optional

import numpy as np

_EMPTY = np.zeros(0, dtype=np.uint64)


def id_hash(ticket_id: str) -> int:
    """The 8-byte hash of an id, the same in every process and every run."""
    digest = hashlib.blake2b(ticket_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def hash_ids(ids: Iterable[str]) -> np.ndarray:
    """The sorted, distinct hashes of ``ids`` (a ``uint64`` array)."""
    hashes = np.fromiter((id_hash(i) for i in ids), dtype=np.uint64)
    return np.unique(hashes)


def union(known: np.ndarray, new: np.ndarray) -> np.ndarray:
    """The sorted, distinct union of two sorted hash arrays.

    Why not ``numpy.union1d``: it sorts everything again; here a small array is merged into a
    large one chunk after chunk, so the large one is only copied once (O(n), not O(n log n)).
    """
    new = np.unique(np.asarray(new, dtype=np.uint64))
    if not len(known):
        return new
    known = np.asarray(known, dtype=np.uint64)
    where = np.searchsorted(known, new)
    present = known[np.minimum(where, len(known) - 1)] == new
    return np.insert(known, where[~present], new[~present])


def save_hashes(path: str, hashes: np.ndarray) -> None:
    """Writes a sorted hash array to ``path`` (a local ``.npy`` file), atomically."""
    temporary = f"{path}.tmp-{os.getpid()}.npy"
    np.save(temporary, np.asarray(hashes, dtype=np.uint64))
    os.replace(temporary, path)


class IdHashSet:
    """Membership of ids in a sorted hash array.

    Args:
      hashes: Sorted, distinct ``uint64`` hashes (see :func:`hash_ids`).
    """

    def __init__(self, hashes: np.ndarray = _EMPTY):
        self.hashes = hashes

    @classmethod
    def load(cls, path: Optional[str]) -> "IdHashSet":
        """The set saved at ``path``, memory-mapped (empty when ``path`` is None)."""
        if path is None:
            return cls()
        hashes = np.load(path, mmap_mode="r")
        # numpy cannot map an empty data section; an empty set needs no file anyway.
        return cls(hashes if len(hashes) else _EMPTY)

    def __len__(self) -> int:
        return len(self.hashes)

    def __contains__(self, ticket_id: str) -> bool:
        if not len(self.hashes):
            return False
        value = np.uint64(id_hash(ticket_id))
        at = int(np.searchsorted(self.hashes, value))
        return at < len(self.hashes) and self.hashes[at] == value


@dataclasses.dataclass(frozen=True)
class KnownIds:
    """Ids a chunk's validation must not pass on (picklable: two local file paths).

    Attributes:
      done: Hashes of the ids answered by earlier runs (``--resume``): ``already_done``.
      earlier: Hashes of the ids kept by the earlier chunks of this run: ``duplicate_id``.
    """
    done: Optional[str] = None
    earlier: Optional[str] = None

    def open(self) -> "KnownIdSets":
        """Maps both files (in a DoFn's ``setup``)."""
        return KnownIdSets(IdHashSet.load(self.done), IdHashSet.load(self.earlier))


@dataclasses.dataclass(frozen=True)
class KnownIdSets:
    """The two sets of :class:`KnownIds`, mapped."""
    done: IdHashSet
    earlier: IdHashSet
