"""The README documents every flag and keeps its two set-up commands first."""

import argparse
import re

from pipeline.options import TicketflowOptions
from simulator.config import add_arguments
from tests.conftest import REPO


def _flags(add):
    parser = argparse.ArgumentParser()
    add(parser)
    return {a.option_strings[0] for a in parser._actions if a.option_strings and a.dest != "help"}


def test_readme_lists_every_pipeline_flag():
    readme = (REPO / "README.md").read_text()
    missing = [f for f in _flags(TicketflowOptions._add_argparse_args) if f"`{f}`" not in readme]
    assert not missing, f"README.md does not document {missing}"


def test_readme_lists_every_simulator_flag():
    readme = (REPO / "README.md").read_text()
    missing = [f for f in _flags(add_arguments) if f"`{f}`" not in readme]
    assert not missing, f"README.md does not document simulator flags {missing}"


def test_readme_starts_with_the_two_commands():
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, flags=re.S)
    commands = [line for block in blocks[:2] for line in block.splitlines()
                if line and not line.startswith("#")]
    assert len(commands) == 2
    assert "python -m pipeline" in commands[0] and "--simulate" in commands[0]
    assert "pytest" in commands[1] and ".[test]" in commands[1]
    ci = (REPO / ".ci" / "run").read_text()
    assert commands[1].replace("python3 -m venv", '"$PYTHON" -m venv') in ci
