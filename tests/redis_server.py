"""A real ``redis-server`` for tests: free 127.0.0.1 port, temp dir, no persistence, stopped after.

Tests of the shared quota talk to a real Redis through the real client (no fake Redis). The
server is the Debian ``redis-server`` binary; tests skip when it is not installed.

Example::

    with RedisServer(tmp_dir) as server:
        client = redis.asyncio.Redis.from_url(server.url)
        ...
        server.stop()      # Redis "dies" mid-run
        server.start()     # back on the same port, empty
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional

import pytest

from tests.conftest import stop_process


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on 127.0.0.1, restartable on the same port.

    Args:
      directory: Working directory of the server (a test's temp dir).
      port: The port; a free one when None.
    """

    def __init__(self, directory: Path, port: Optional[int] = None):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (Debian package redis-server)")
        self.binary = binary
        self.directory = Path(directory)
        self.port = port or free_port()
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> "RedisServer":
        """Starts the server (again, after :meth:`stop`) and waits until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
               "--save", "", "--appendonly", "no", "--dir", str(self.directory)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while not _pings(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stops the server (its data is gone: it never saves)."""
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
