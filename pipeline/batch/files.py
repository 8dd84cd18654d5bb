"""The batch driver's files: request parts, the next round's parts, the collected outcomes.

Everything is streamed line by line through Beam's FileSystems (local or ``gs://``), so the
driver holds one part's custom ids at most, never the requests themselves.

* :func:`scan_part` — lines and enqueued tokens of a request file the pack pipeline wrote;
* :class:`PartWriter` — writes request lines into files of at most N lines, bytes and tokens
  (the next round's parts, and a part split to fit a learnt enqueued-token limit);
* :func:`collect_part` — a finished batch's output and error files → the outcome lines the
  collect pipeline reads (``outcomes-PART.jsonl``) and the custom ids to send again
  (``retry-PART.txt``); a request no line mentions is a retryable failure: nothing is left
  unaccounted for;
* :func:`answered_lines` — how many lines of an abandoned batch's late output were answered
  (billed by the Batch API although their tickets were answered online).

Example::

    lines, tokens = scan_part("out/batch/JOB/round-1/requests-00000-of-00002.jsonl")
    counts = collect_part(part, client, "out/batch/JOB/round-1", prices, max_rounds=7, late=False)
"""

from __future__ import annotations

import collections
import io
import json
from typing import Dict, Iterator, List, Optional, Set, Tuple

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from pipeline.batch.journal import Part
from pipeline.batch.policy import FINAL, RETRY, line_fate
from transforms.llm.batch import line_id, line_tokens, outcome_record, request_body
from transforms.llm.providers import RETRYABLE, LineOutcome
from transforms.pricing import Price
from transforms.sinks import join_path

_UNCOMPRESSED = CompressionTypes.UNCOMPRESSED


def iter_lines(path: str) -> Iterator[str]:
    """The non-blank lines of a text file, without their newline."""
    with FileSystems.open(path, compression_type=_UNCOMPRESSED) as raw:
        for line in io.TextIOWrapper(raw, encoding="utf-8"):
            line = line.rstrip("\r\n")
            if line.strip():
                yield line


def _cid(line: str) -> str:
    return line_id(json.loads(line))


def scan_part(path: str) -> Tuple[int, int]:
    """(lines, enqueued tokens) of a request file."""
    lines = tokens = 0
    for line in iter_lines(path):
        lines += 1
        tokens += line_tokens(request_body(json.loads(line)))
    return lines, tokens


def part_record(name: str, path: str, lines: int, tokens: int) -> Dict:
    """How the journal describes a part."""
    return {"part": name, "path": path, "lines": lines, "tokens": tokens}


class PartWriter:
    """Writes request lines into parts ``PREFIX-NNNNN.jsonl`` within the given limits.

    Args:
      prefix: Path prefix of the parts.
      max_lines: Most lines per part.
      max_bytes: Most bytes per part.
      max_tokens: Most enqueued tokens per part (0: no limit).
    """

    def __init__(self, prefix: str, max_lines: int, max_bytes: int, max_tokens: int = 0):
        self._prefix = prefix
        self._limits = (max_lines, max_bytes, max_tokens)
        self._handle = None
        self._counts = [0, 0, 0]
        self.parts: List[Dict] = []

    def _open(self) -> None:
        name = f"{self._prefix.rsplit('/', 1)[-1]}-{len(self.parts):05d}"
        path = f"{self._prefix}-{len(self.parts):05d}.jsonl"
        self._handle = FileSystems.create(path, mime_type="application/jsonl",
                                          compression_type=_UNCOMPRESSED)
        self._counts = [0, 0, 0]
        self.parts.append(part_record(name, path, 0, 0))

    def add(self, line: str, tokens: int) -> None:
        data = (line + "\n").encode("utf-8")
        lines, size, toks = self._counts
        max_lines, max_bytes, max_tokens = self._limits
        if self._handle is not None and lines and (
                lines + 1 > max_lines or size + len(data) > max_bytes
                or (max_tokens and toks + tokens > max_tokens)):
            self._finish()
        if self._handle is None:
            self._open()
        self._handle.write(data)
        lines, size, toks = self._counts
        self._counts = [lines + 1, size + len(data), toks + tokens]
        self.parts[-1].update(lines=lines + 1, tokens=toks + tokens)

    def _finish(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

    def close(self) -> List[Dict]:
        """Closes the last part; returns every part's record."""
        self._finish()
        return self.parts


def copy_lines(parts: List[Part], keep: Optional[Set[str]], writer: PartWriter) -> List[Dict]:
    """Copies the lines of ``parts`` whose custom id is in ``keep`` (None: all) to ``writer``."""
    for part in parts:
        for line in iter_lines(part.path):
            if keep is None or _cid(line) in keep:
                writer.add(line, line_tokens(request_body(json.loads(line))))
    return writer.close()


def read_ids(paths: List[str]) -> Set[str]:
    """The custom ids listed in retry files (one per line)."""
    out: Set[str] = set()
    for path in paths:
        if FileSystems.exists(path):
            out.update(iter_lines(path))
    return out


def collect_part(part: Part, client, round_dir: str, prices: Tuple[Price, Price],
                 max_rounds: int, late: bool) -> Dict[str, int]:
    """Downloads a finished batch's output and error files and sorts every line.

    Args:
      part: The part (its batch ended: ``output_file_id`` / ``error_file_id`` / ``status``).
      client: The provider's batch client (its ``download`` and ``classify_line``).
      round_dir: Where the round's files are.
      prices: (batch price, online price) of the model.
      max_rounds: ``--max_retries`` + 1.
      late: The deadline has passed (what is not final is answered online).

    Returns:
      Counts: ``ok``, ``permanent``, ``exhausted`` (final retryable failures), ``retry``,
      ``leftover`` (answered online), ``missing`` (requests no line mentioned; counted in
      retry/leftover/exhausted too) and ``duplicate`` (a second line for one request: ignored).
    """
    counts: Dict[str, int] = collections.Counter()
    seen: Set[str] = set()
    outcomes_path = join_path(round_dir, f"outcomes-{part.name}.jsonl")
    retry_path = join_path(round_dir, f"retry-{part.name}.txt")
    # A batch that failed validation ran nothing: its lines go online (see docs/batch.md).
    failed = part.status == "failed"
    with FileSystems.create(outcomes_path, compression_type=_UNCOMPRESSED) as out, \
            FileSystems.create(retry_path, compression_type=_UNCOMPRESSED) as retry:
        def sort(outcome: LineOutcome) -> None:
            fate = "leftover" if failed else line_fate(outcome.kind, part.round, max_rounds,
                                                       late)
            if fate == FINAL:
                record = outcome_record(outcome, part.round, *prices)
                out.write((json.dumps(record, ensure_ascii=False, separators=(",", ":"))
                           + "\n").encode("utf-8"))
                counts["exhausted" if outcome.kind == RETRYABLE else outcome.kind] += 1
            elif fate == RETRY:
                retry.write((outcome.custom_id + "\n").encode("utf-8"))
                counts["retry"] += 1
            else:
                counts["leftover"] += 1

        for kind, file_id in (("output", part.output_file_id), ("errors", part.error_file_id)):
            if not file_id or failed:
                continue
            local = join_path(round_dir, f"{kind}-{part.name}.jsonl")
            client.download(file_id, local)
            for line in iter_lines(local):
                try:
                    outcome = client.classify_line(json.loads(line))
                except ValueError:
                    counts["unreadable"] += 1
                    continue
                if outcome.custom_id in seen:
                    counts["duplicate"] += 1
                    continue
                seen.add(outcome.custom_id)
                sort(outcome)
        for line in iter_lines(part.path):
            cid = _cid(line)
            if cid not in seen:
                seen.add(cid)
                counts["missing"] += 0 if failed else 1
                sort(LineOutcome(cid, RETRYABLE, None, "missing_from_output",
                                 "the batch's files have no line for this request"))
    return dict(counts)


def answered_lines(client, file_id: str, local: str) -> int:
    """Downloads a batch output file to ``local`` and counts its answered (status 200) requests.

    A 200 is billed even when its body is malformed, so it counts too; each request counts once,
    however many lines mention it; unreadable lines are not counted.
    """
    client.download(file_id, local)
    answered: Set[str] = set()
    for line in iter_lines(local):
        try:
            outcome = client.classify_line(json.loads(line))
        except ValueError:
            continue
        if outcome.status == 200:
            answered.add(outcome.custom_id)
    return len(answered)
