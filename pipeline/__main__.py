"""Entry point: ``python -m pipeline --input PATTERN --output PREFIX [flags]``."""

import os
import sys

from pipeline.run import EXIT_INTERRUPTED, run

if __name__ == "__main__":
    try:
        sys.exit(run())
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of the job.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    except KeyboardInterrupt:
        # A Ctrl-C outside the run itself (preflight, summary): nothing to drain.
        print("\nticketflow: interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
