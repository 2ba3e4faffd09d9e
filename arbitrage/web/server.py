"""Running the page: in the foreground (`arbitrage web`) or on a thread (tests, screenshots)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from starlette.applications import Starlette

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(app: Starlette, port: int | None = None, timeout_s: float = 20.0) -> Iterator[str]:
    """Serve ``app`` on a thread of this process; yield its base URL; stop it on exit."""
    server = uvicorn.Server(
        uvicorn.Config(app, host=HOST, port=port or free_port(), log_level="warning")
    )
    thread = threading.Thread(target=server.run, name="opportunities-page", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the opportunities page did not start")
        time.sleep(0.05)
    try:
        yield f"http://{HOST}:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
