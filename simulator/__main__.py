"""``python -m simulator [flags]``: serve the simulator until SIGINT or SIGTERM.

The first line on stdout is exactly ``listening on http://HOST:PORT/v1`` (flushed at once), so a
parent process can start it with ``--port 0`` and read the port it got.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from simulator.config import config_from_argv
from simulator.server import serve


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the simulator from command-line flags.

    Args:
        argv: Flags without the program name; None means ``sys.argv[1:]``.

    Returns:
        The process exit code (0 after a clean SIGINT/SIGTERM shutdown).
    """
    config = config_from_argv(argv)
    if config.log_requests:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")

    def announce(base_url: str) -> None:
        print(f"listening on {base_url}", flush=True)

    asyncio.run(serve(config, on_ready=announce))
    return 0


if __name__ == "__main__":
    sys.exit(main())
