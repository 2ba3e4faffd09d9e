"""Real receivers for the notification tests: an HTTP server in a thread (webhooks) and an SMTP
server (aiosmtpd), each recording what reached it."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from pipelines.notifications import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature_valid,
)


@dataclass
class WebhookReceiver:
    """Answers ``fail_first`` requests of each Idempotency-Key with ``fail_status``, then 200;
    with ``hang_s``, accepts every request and sleeps that long before answering."""

    secret: bytes
    fail_first: int = 0
    fail_status: int = 500
    retry_after: str | None = None
    hang_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answered(self) -> list[dict[str, Any]]:
        """The requests answered 2xx."""
        with self.lock:
            return [r for r in self.requests if r["status"] < 300]

    def keys(self) -> Counter[str]:
        """Requests per Idempotency-Key, every request counted (raw)."""
        with self.lock:
            return Counter(r["key"] for r in self.requests)

    def delivered_keys(self) -> Counter[str]:
        return Counter(r["key"] for r in self.answered())


def _handler(receiver: WebhookReceiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            key = self.headers.get(IDEMPOTENCY_HEADER, "")
            if receiver.hang_s:
                time.sleep(receiver.hang_s)
            with receiver.lock:
                seen = sum(1 for r in receiver.requests if r["key"] == key)
                status = receiver.fail_status if seen < receiver.fail_first else 200
                receiver.requests.append(
                    {
                        "key": key,
                        "body": body,
                        "status": status,
                        # As a receiver verifies (docs/security.md): the timestamp within
                        # the replay window, the HMAC over timestamp, key and body.
                        "signed": signature_valid(
                            receiver.secret,
                            body,
                            key,
                            self.headers.get(TIMESTAMP_HEADER, ""),
                            self.headers.get(SIGNATURE_HEADER, ""),
                            time.time(),
                        ),
                        "at": time.monotonic(),
                    }
                )
            try:
                self.send_response(status)
                if status >= 300 and receiver.retry_after is not None:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()
            except OSError:
                pass  # the client gave up (its timeout) before the answer

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextmanager
def webhook_receiver(secret: bytes, **behaviour: Any) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret, **behaviour)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class MailReceiver:
    messages: list[Message] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        return "250 OK"

    def url(self, to: str = "buyer@example.com") -> str:
        return f"smtp://127.0.0.1:{self.port}/?from=alerts@example.com&to={to}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def mail_receiver() -> Iterator[MailReceiver]:
    receiver = MailReceiver(port=free_port())
    controller = Controller(receiver, hostname="127.0.0.1", port=receiver.port)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()
