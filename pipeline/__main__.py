"""Entry point: ``python -m pipeline --input PATTERN --output PREFIX [flags]``."""

import sys

from pipeline.run import run

if __name__ == "__main__":
    sys.exit(run())
