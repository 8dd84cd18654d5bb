"""Flex Template entry point: the launcher runs this file (FLEX_TEMPLATE_PYTHON_PY_FILE).

Thin on purpose: flags, wiring and exit codes live in :mod:`pipeline.run`, so the template and
``python -m pipeline`` run exactly the same code. Locally::

    python templates/main.py --input examples/tickets.jsonl --output out/run1 --simulate
"""

import sys

from pipeline.run import run

if __name__ == "__main__":
    sys.exit(run())
