"""No silent mistakes in flags: every flag must be known to ticketflow, to Beam or to the runner.

Beam parses argv one options class at a time and only *warns* about a flag that no class
declares ("Discarding unparseable args", lost among the start-up lines, and not shown at all with
``--quiet``). So ``--reqests_per_minute 60`` ran the whole job at full speed with exit code 0.
This module finds such flags before any work starts, so the driver can exit with code 2 and one
line naming the flag and the closest known one.

The known flags are collected the way Beam collects them in ``PipelineOptions.get_all_options``:
every class in Beam's registry of options classes (``PipelineOptions.__subclasses__()``:
StandardOptions, GoogleCloudOptions, WorkerOptions, DirectOptions, PortableOptions, the Flink,
Spark and Prism options, TestOptions, DebugOptions, SetupOptions, ... and TicketflowOptions)
adds its arguments to one parser; the module of the chosen ``--runner`` is imported first, so an
options class a runner declares in its own module (e.g. Dask's) is known too. argv is then parsed
by that parser, so ``--flag value``, ``--flag=value``, negative numbers as values and values that
start with ``--`` but hold a space (``--simulator_flags "--p_503 0.1"``) are read exactly as Beam
reads them.

Decisions:

* Abbreviations are unknown flags. Beam's parsers use ``allow_abbrev=False``, so Beam would drop
  ``--requests_per_min 60`` like any typo; here it is an error suggesting the full flag.
* A value no flag takes (``--input a.jsonl b.jsonl`` from an unquoted glob, ``--streaming false``
  on a switch) is silently dropped by Beam too, so it is an error as well.
* Runners with a job server (PortableRunner and its subclasses: Flink, Spark, Prism, ...) learn
  more flags from the job server at submission (``DescribePipelineOptions``: the Java runner's own
  options). Those cannot be known before the job server starts, so under such a runner only a
  flag that is nearly a known one (a likely typo) is an error; any other is left to the runner.

Example::

    flag_error(["--input", "a.jsonl", "--reqests_per_minute", "60"])
    # 'unknown flag --reqests_per_minute: did you mean --requests_per_minute?'
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from apache_beam.options.pipeline_options import (PipelineOptions, StandardOptions,
                                                  _BeamArgumentParser)

# Imported for its side effect too: TicketflowOptions joins Beam's registry of options classes.
from pipeline.options import TicketflowOptions  # noqa: F401  pylint: disable=unused-import
from transforms.errors import redact

HELP_HINT = "python -m pipeline --help"
END_OF_FLAGS = "--"

# difflib's default: how close a flag must be to be suggested.
SUGGEST_CUTOFF = 0.6
# Under a job-server runner an unknown flag may be the runner's own; only this close is a typo.
TYPO_CUTOFF = 0.85

# argparse's own test for a negative number, which it reads as a value, not as a flag.
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
_MAX_SHOWN_CHARS = 60


class _ParseError(Exception):
    """argparse found a bad value; Beam's own parsing will report it with its usage text."""


class _Parser(_BeamArgumentParser):
    """Beam's parser, raising instead of printing usage and exiting."""

    def error(self, message):
        raise _ParseError(message)


@dataclass(frozen=True)
class Scan:
    """What :func:`scan` found in argv.

    Attributes:
      unknown: Unknown flags as ``(flag, closest known flag or None)``, in argv order, once each.
      stray: Values no flag takes, as ``(value, the flag and values before it)``.
      job_server_runner: The runner learns more flags from its job server at submission.
    """

    unknown: Tuple[Tuple[str, Optional[str]], ...]
    stray: Tuple[Tuple[str, str], ...]
    job_server_runner: bool


def _looks_like_flag(token: str) -> bool:
    """argparse's rule: a dash-led token is a flag unless a negative number or holding a space."""
    return (token.startswith("-") and token not in ("-", END_OF_FLAGS) and " " not in token
            and not _NEGATIVE_NUMBER.match(token))


def _registry() -> List[type]:
    """Beam's registry of options classes, deduplicated as ``get_all_options`` does."""
    classes = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    return list(classes.values())


def build_parser() -> argparse.ArgumentParser:
    """One parser with the arguments of every registered options class, as Beam builds it.

    ``--help`` is known but does nothing here: ``TicketflowOptions(argv)`` prints the help.
    """
    parser = _Parser(allow_abbrev=False, add_help=False)
    parser.add_argument("-h", "--help", action="store_true")
    for cls in _registry():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    return parser


def runner_class(name: Optional[str]) -> Optional[type]:
    """Imports the runner ``--runner`` names, as Beam's ``create_runner`` resolves it.

    Importing it registers any options class its module declares. Returns None when the name is
    not a runner Beam could load; Beam itself reports that later, with its own message.
    """
    by_name = {path.rsplit(".", 1)[-1].lower(): path for path in StandardOptions.ALL_KNOWN_RUNNERS}
    name = name or StandardOptions.DEFAULT_RUNNER
    path = by_name.get(name.lower(), by_name.get(name.lower() + "runner", name))
    if "." not in path:
        return None
    module_name, class_name = path.rsplit(".", 1)
    try:
        module = importlib.import_module(module_name)
    except Exception:  # noqa: BLE001 - a runner that cannot load is Beam's error to report
        return None
    found = getattr(module, class_name, None)
    return found if isinstance(found, type) else None


def _known_strings(parser: argparse.ArgumentParser) -> List[str]:
    return [opt for action in parser._actions for opt in action.option_strings]  # noqa: SLF001


def _parse_extras(parser: argparse.ArgumentParser, argv: Sequence[str]):
    """The tokens Beam's parser would not consume, and the ``--runner`` value."""
    try:
        namespace, extras = parser.parse_known_args(list(argv))
        return extras, getattr(namespace, "runner", None)
    except _ParseError:
        return _scan_names(parser, argv), _runner_from_tokens(argv)


def _scan_names(parser: argparse.ArgumentParser, argv: Sequence[str]) -> List[str]:
    """Fallback when a value is bad: unknown flag names only, by name (never a stray value)."""
    takes_value = {opt: action.nargs is None and action.const is None
                   for action in parser._actions for opt in action.option_strings}  # noqa: SLF001
    extras, skip = [], False
    for token in argv:
        if token == END_OF_FLAGS:
            break
        if skip:
            skip = False
            continue
        if not _looks_like_flag(token):
            continue
        name = token.split("=", 1)[0]
        if name not in takes_value:
            extras.append(name)
        elif "=" not in token:
            skip = takes_value[name]
    return extras


def _runner_from_tokens(argv: Sequence[str]) -> Optional[str]:
    for i, token in enumerate(argv):
        if token.startswith("--runner="):
            return token.split("=", 1)[1]
        if token == "--runner" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _closest(flag: str, known: Sequence[str], cutoff: float) -> Optional[str]:
    matches = difflib.get_close_matches(flag, known, n=1, cutoff=cutoff)
    return matches[0] if matches else None


def _context(argv: Sequence[str], index: int) -> str:
    """The flag and values just before ``argv[index]``, for the message."""
    start = index - 1
    while start > 0 and not _looks_like_flag(argv[start]):
        start -= 1
    return " ".join(argv[max(start, 0):index])


def scan(argv: Sequence[str]) -> Scan:
    """Finds the flags and values in ``argv`` that neither ticketflow, Beam nor the runner takes.

    Args:
      argv: The command-line arguments, without the program name.

    Returns:
      A :class:`Scan`. Under a job-server runner, ``unknown`` holds only near misses.
    """
    argv = list(argv)
    extras, runner = _parse_extras(build_parser(), argv)
    cls = runner_class(runner)
    # Parse again: importing the runner's module may have registered options classes.
    parser = build_parser()
    extras, _ = _parse_extras(parser, argv)
    # Beam stops reading at "--" and ignores the rest without a word.
    ended = END_OF_FLAGS in extras
    if ended:
        extras = extras[:extras.index(END_OF_FLAGS)]
    job_server = cls is not None and any(c.__name__ == "PortableRunner" for c in cls.__mro__)
    known = _known_strings(parser)

    unknown, seen, valued = [], set(), []
    for token in extras:
        if not _looks_like_flag(token):
            continue
        flag = token.split("=", 1)[0]
        if "=" not in token and token in argv:
            after = argv.index(token) + 1
            if after < len(argv) and not _looks_like_flag(argv[after]):
                valued.append(argv[after])  # Beam's rule: an unknown flag takes the next value
        if flag in seen:
            continue
        seen.add(flag)
        suggestion = _closest(flag, known, SUGGEST_CUTOFF)
        if job_server and _closest(flag, known, TYPO_CUTOFF) is None:
            continue
        unknown.append((flag, suggestion))

    stray = []
    for token in extras:
        if _looks_like_flag(token):
            continue
        if token in valued:
            valued.remove(token)
            continue
        stray.append((token, _context(argv, argv.index(token)) if token in argv else ""))
    if ended:
        stray.append((END_OF_FLAGS, _context(argv, argv.index(END_OF_FLAGS))))
    return Scan(tuple(unknown), tuple(stray), job_server)


def unknown_flags(argv: Sequence[str]) -> List[Tuple[str, Optional[str]]]:
    """The unknown flags in ``argv``, each with the closest known flag (or None).

    Example: ``unknown_flags(["--temp_locaton", "gs://b/t"])`` is
    ``[("--temp_locaton", "--temp_location")]``.
    """
    return list(scan(argv).unknown)


def _show(value: str) -> str:
    value = redact(value)
    return value if len(value) <= _MAX_SHOWN_CHARS else value[:_MAX_SHOWN_CHARS] + "..."


def format_unknown(unknown: Sequence[Tuple[str, Optional[str]]]) -> str:
    """One line naming the unknown flags and what was probably meant."""
    if len(unknown) == 1:
        flag, suggestion = unknown[0]
        if suggestion:
            return f"unknown flag {flag}: did you mean {suggestion}?"
        return f"unknown flag {flag} ({HELP_HINT} lists the flags)"
    parts = [f"{flag} (did you mean {suggestion}?)" if suggestion else flag
             for flag, suggestion in unknown]
    return f"unknown flags {', '.join(parts)}; {HELP_HINT} lists the flags"


def format_stray(value: str, context: str) -> str:
    """One line about a value that no flag takes."""
    where = f" after {_show(context)}" if context else ""
    if value == END_OF_FLAGS:
        return f"unexpected argument '--'{where}: everything after it would be ignored"
    return (f"unexpected argument {_show(value)!r}{where}: a flag takes one value (quote globs; "
            "join several paths with commas)")


def flag_error(argv: Sequence[str]) -> Optional[str]:
    """The one-line error to print for ``argv`` (without the ``ticketflow: error:`` prefix).

    Returns:
      None when every flag and value is taken by ticketflow, Beam or the runner.
    """
    found = scan(argv)
    if found.unknown:
        return format_unknown(found.unknown)
    if found.stray:
        return format_stray(*found.stray[0])
    return None
