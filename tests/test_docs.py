"""The docs stay true: a short README that starts with its two commands, and a docs/ reference
whose flag table, flag lists, layout and links are checked against the code and the tree."""

import argparse
import re

import pytest

from pipeline.options import TicketflowOptions
from simulator.config import add_arguments
from tests.conftest import REPO
from tools import docs_flags

README_MAX_CHARS = 15_000
DOCS = REPO / "docs"
# The packages whose every module docs/development.md must name.
CODE_PACKAGES = ("pipeline", "transforms", "simulator")
# A path in backticks that starts at one of the repository's top-level folders.
_TOP_LEVEL = ("pipeline/", "transforms/", "simulator/", "tools/", "benchmarks/", "tests/",
              "examples/", "templates/", "docs/", ".ci/")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _flags(add):
    parser = argparse.ArgumentParser()
    add(parser)
    return {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


def _read(path):
    return path.read_text(encoding="utf-8")


def _pages():
    return [REPO / "README.md", REPO / "examples" / "README.md", *sorted(DOCS.glob("*.md"))]


def _section(text, heading):
    """The body of the ``## heading`` section of a Markdown page."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text,
                      flags=re.DOTALL | re.MULTILINE)
    assert match, f"no section '## {heading}'"
    return match.group(1)


def test_readme_starts_with_the_two_commands():
    readme = _read(REPO / "README.md")
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
    commands = [line for block in blocks[:2] for line in block.splitlines()
                if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "python -m pipeline" in commands[0] and "--simulate" in commands[0]
    assert "pytest" in commands[1] and ".[test]" in commands[1]
    ci = _read(REPO / ".ci" / "run")
    assert commands[1].replace("python3 -m venv", '"$PYTHON" -m venv') in ci
    # Nothing but the title and the first paragraph comes before them.
    assert readme.index("```bash") < 600


def test_readme_is_a_front_page():
    readme = _read(REPO / "README.md")
    assert len(readme) <= README_MAX_CHARS, f"README.md has {len(readme)} characters"
    where = _section(readme, "Where to read on")
    for page in sorted(DOCS.glob("*.md")):
        assert f"(docs/{page.name})" in where, f"README does not link docs/{page.name}"


def test_flag_table_is_what_the_generator_produces_now():
    text = _read(docs_flags.PAGE)
    assert docs_flags.render(text) == text, "docs/flags.md is stale: python -m tools.docs_flags"
    assert text.count(docs_flags.START) == 1 and text.count(docs_flags.END) == 1
    assert docs_flags.main(["--check"]) == 0


def test_generator_rewrites_a_stale_table_and_needs_the_markers():
    stale = f"intro\n{docs_flags.START}\n| old |\n{docs_flags.END}\noutro\n"
    fresh = docs_flags.render(stale)
    assert fresh.startswith("intro\n") and fresh.endswith("outro\n")
    assert docs_flags.table() in fresh and "| old |" not in fresh
    with pytest.raises(ValueError):
        docs_flags.render("no markers here")


def test_every_pipeline_flag_is_documented():
    table = _read(docs_flags.PAGE).split(docs_flags.START, 1)[1].split(docs_flags.END, 1)[0]
    flags = _flags(TicketflowOptions._add_argparse_args)
    missing = [f for f in flags if f"| `{f}` |" not in table]
    assert not missing, f"docs/flags.md does not document {missing}"


def test_every_simulator_flag_is_documented():
    # The simulator's flags live in its own README, which docs/simulator.md links to.
    simulator_readme = _read(REPO / "simulator" / "README.md")
    missing = [f for f in _flags(add_arguments) if f"| `{f}` |" not in simulator_readme]
    assert not missing, f"simulator/README.md does not document simulator flags {missing}"
    assert "](../simulator/README.md)" in _read(DOCS / "simulator.md")


def test_layout_names_every_module_and_only_real_paths():
    layout = _section(_read(DOCS / "development.md"), "Layout")
    named = {token for token in re.findall(r"`([^`\s]+)`", layout) if token.startswith(_TOP_LEVEL)}
    missing_paths = sorted(p for p in named if not (REPO / p).exists())
    assert not missing_paths, f"docs/development.md names paths that do not exist: {missing_paths}"
    modules = sorted(
        str(path.relative_to(REPO)) for package in CODE_PACKAGES
        for path in (REPO / package).rglob("*.py")
        # An empty __init__.py says nothing worth a line.
        if not (path.name == "__init__.py" and not path.read_text(encoding="utf-8").strip()))
    assert "transforms/llm/flow.py" in modules
    unnamed = [m for m in modules if m not in named]
    assert not unnamed, f"docs/development.md does not name {unnamed}"


def test_relative_links_point_to_existing_files():
    broken = []
    for page in _pages():
        for target in _LINK.findall(_read(page)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            if "#" in target:
                broken.append(f"{page.name}: {target} (anchors break when headings move)")
                continue
            if not (page.parent / target).resolve().exists():
                broken.append(f"{page.name}: {target}")
    assert not broken, broken
