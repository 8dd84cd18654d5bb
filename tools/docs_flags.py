"""Regenerates the flag table of docs/flags.md from pipeline/options.py.

The table sits between ``<!-- flags:start -->`` and ``<!-- flags:end -->`` in docs/flags.md and is
never edited by hand: the flags are declared once, in ``TicketflowOptions``, and this module turns
their defaults and help texts into Markdown. tests/test_docs.py checks that the page holds exactly
what :func:`table` produces now, so it cannot go stale. Run it from the repository root (``tools``
is not installed)::

    python -m tools.docs_flags           # rewrite the table in docs/flags.md
    python -m tools.docs_flags --check   # exit 1 if the table is stale, change nothing
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

from pipeline.options import TicketflowOptions

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "flags.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"


def table() -> str:
    """The Markdown table of ticketflow's flags: flag, default and meaning, in declared order."""
    parser = argparse.ArgumentParser()
    TicketflowOptions._add_argparse_args(parser)  # pylint: disable=protected-access
    rows = ["| Flag | Default | Meaning |", "|---|---|---|"]
    for action in parser._actions:  # pylint: disable=protected-access
        if not action.option_strings or action.dest == "help":
            continue
        default = action.default
        shown = "off" if default is False else ("—" if default is None else default)
        text = (action.help or "").replace("%%", "%").replace("|", "\\|")
        rows.append(f"| `{action.option_strings[0]}` | {shown} | {text} |")
    return "\n".join(rows)


def render(text: str) -> str:
    """``text`` with the part between the markers replaced by the current table.

    Raises:
      ValueError: when ``text`` lacks either marker.
    """
    if START not in text or END not in text.split(START, 1)[1]:
        raise ValueError(f"the page needs the markers {START} and {END} around the table")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    """Rewrites (or, with ``--check``, checks) the table; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m tools.docs_flags",
                                     description="Regenerates the flag table of docs/flags.md.")
    parser.add_argument("--check", action="store_true",
                        help="Only check that the table is current (exit 1 if not).")
    args = parser.parse_args(argv)
    text = PAGE.read_text(encoding="utf-8")
    fresh = render(text)
    if args.check:
        if fresh != text:
            print(f"{PAGE.name} is stale: run python -m tools.docs_flags", file=sys.stderr)
            return 1
        return 0
    if fresh != text:
        PAGE.write_text(fresh, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
