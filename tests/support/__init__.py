"""Helpers shared by tests/unit, tests/inprocess and tests/e2e (and the demo and benchmarks)."""

from __future__ import annotations

import signal
import socketserver
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
VECTORS = REPO / "tests" / "vectors"


@contextmanager
def serving(server: socketserver.BaseServer) -> Iterator[None]:
    """Run ``server`` on a daemon thread; on exit stop it, close its socket, join the thread."""
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def stop_process(
    process: subprocess.Popen[bytes], *, sig: int = signal.SIGTERM, timeout: float = 15.0
) -> int:
    """Send ``sig`` to a process that still runs, wait ``timeout`` seconds, then kill it.

    Returns its exit status."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
    return process.returncode
