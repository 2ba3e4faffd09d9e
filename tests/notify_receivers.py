"""Real receivers for the notification tests: an HTTP server in a thread (webhooks) and an SMTP
server (aiosmtpd), each recording what reached it."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from arbitrage.domain.notifications import (
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
    # Each login: (user, password, whether the session was encrypted by then).
    logins: list[tuple[str, str, bool]] = field(default_factory=list)
    # Each message: whether its session was encrypted.
    encrypted: list[bool] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.original_content))
        self.encrypted.append(_encrypted(server, session))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        user, password = auth_data.login.decode(), auth_data.password.decode()
        self.logins.append((user, password, _encrypted(server, session)))
        return AuthResult(success=True)

    def url(
        self,
        to: str = "buyer@example.com",
        scheme: str = "smtp",
        host: str = "127.0.0.1",
        credentials: str = "",
    ) -> str:
        user = f"{credentials}@" if credentials else ""
        return f"{scheme}://{user}{host}:{self.port}/?from=alerts@example.com&to={to}"


def _encrypted(server: Any, session: Any) -> bool:
    """STARTTLS sets the session's ``ssl``; smtps (TLS from the first byte) shows on the
    transport."""
    return session.ssl is not None or server.transport.get_extra_info("ssl_object") is not None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def mail_receiver(
    tls: Literal["none", "starttls", "implicit"] = "none",
    certificate: tuple[Path, Path] | None = None,
    login: bool = False,
) -> Iterator[MailReceiver]:
    """An SMTP server on 127.0.0.1: plain, offering STARTTLS, or TLS from the first byte
    (smtps), with ``certificate`` (cert, key); with ``login``, AUTH is offered (and allowed
    without TLS: whether the client sends a password in the clear is what is tested)."""
    receiver = MailReceiver(port=free_port())
    options: dict[str, Any] = {}
    if tls != "none":
        assert certificate is not None, "TLS needs a certificate (tls_files)"
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*certificate)
        options["ssl_context" if tls == "implicit" else "tls_context"] = context
    if login:
        options.update(authenticator=receiver.authenticate, auth_require_tls=False)
    controller = Controller(receiver, hostname="127.0.0.1", port=receiver.port, **options)
    controller.start()
    try:
        yield receiver
    finally:
        controller.stop()


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and a server certificate it signed (127.0.0.1, localhost), and a
    self-signed certificate for the same names that no CA vouches for."""

    ca: Path
    server: tuple[Path, Path]  # (certificate, key)
    self_signed: tuple[Path, Path]
    other_name: tuple[Path, Path]  # signed by the CA, for mail.example.com only


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def tls_files(folder: Path) -> TlsFiles:
    """Made with the openssl command (Debian's openssl package): EC keys, valid for a day."""
    names = "subjectAltName=IP:127.0.0.1,DNS:localhost"
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca, ca_key = folder / "ca.pem", folder / "ca.key"
    _openssl(
        "req", "-x509", *key, "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=arbitrage test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    server = _signed(folder, "server", names, ca, ca_key, key)
    other = _signed(folder, "other", "subjectAltName=DNS:mail.example.com", ca, ca_key, key)
    rogue, rogue_key = folder / "self-signed.pem", folder / "self-signed.key"
    _openssl("req", "-x509", *key, "-keyout", str(rogue_key), "-out", str(rogue), "-days", "1",
             "-subj", "/CN=127.0.0.1", "-addext", names)  # fmt: skip
    return TlsFiles(ca, server, (rogue, rogue_key), other)


def _signed(
    folder: Path, name: str, names: str, ca: Path, ca_key: Path, key: list[str]
) -> tuple[Path, Path]:
    """A server certificate for ``names`` signed by the CA: (certificate, key)."""
    cert, cert_key, request = folder / f"{name}.pem", folder / f"{name}.key", folder / "req.pem"
    _openssl("req", "-new", *key, "-keyout", str(cert_key), "-out", str(request),
             "-subj", f"/CN={name}")  # fmt: skip
    extensions = folder / f"{name}.ext"
    extensions.write_text(
        f"{names}\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
    )
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-out", str(cert), "-days", "1", "-extfile", str(extensions),
    )  # fmt: skip
    return cert, cert_key
