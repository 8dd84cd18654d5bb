"""Regenerates the README's flag table from pipeline/options.py (``python -m tools.readme_flags``).

The table sits between ``<!-- flags:start -->`` and ``<!-- flags:end -->``; tests/test_docs.py
checks that every flag is documented.
"""

import argparse
import pathlib

from pipeline.options import TicketflowOptions

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- flags:start -->", "<!-- flags:end -->"


def table() -> str:
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


def main() -> None:
    text = README.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


if __name__ == "__main__":
    main()
