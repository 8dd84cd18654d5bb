"""Entry point: ``python -m pipeline --input PATTERN --output PREFIX [flags]``."""

import sys

from pipeline.run import EXIT_INTERRUPTED, run

if __name__ == "__main__":
    try:
        sys.exit(run())
    except KeyboardInterrupt:
        # A Ctrl-C outside the run itself (preflight, summary): nothing to drain.
        print("\nticketflow: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
