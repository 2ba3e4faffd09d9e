"""Alert delivery, the network part: one sender per channel type, built from the channels
file (arbitrage/domain/notifications.py holds every rule they follow).

Each ``send`` tries one event on one channel within the channel's ``RetryPolicy`` (attempts,
capped backoff, ``Retry-After``, a timeout per request, a bound on the whole delivery) and
returns what happened; it never raises for the receiver's sake, so a dead receiver costs its
bounded time and the stage goes on. Errors are redacted: secrets and the URLs that carry them
are replaced before any text leaves a sender.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from typing import Protocol
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from arbitrage.domain.digest import (
    DIGEST_EVENT,
    Digest,
    digest_idempotency_key,
    digest_message_id,
    digest_webhook_body,
    table_html,
    table_text,
)
from arbitrage.domain.notifications import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    RETRYABLE_STATUSES,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    AlertEvent,
    chat_safe,
    email_message_id,
    message_text,
    next_wait_s,
    parse_retry_after,
    plaintext_login_problem,
    signature,
    webhook_body,
)
from arbitrage.domain.notifications_config import (
    Channel,
    NotificationsConfig,
    NotificationsConfigError,
    RetryPolicy,
    load_notifications_config,
)
from arbitrage.domain.redaction import secure_endpoint_problem

# Longest error text kept on a delivery document or a dead letter.
ERROR_CHARS = 500
_SECRET_PIECE = re.compile(r"[^/?&=:@#]{8,}")


@dataclass(frozen=True)
class DeliveryResult:
    delivered: bool
    attempts: int
    error: str = ""  # redacted; empty when delivered


class Sender(Protocol):
    channel: Channel

    def send(self, event: AlertEvent) -> DeliveryResult: ...

    def send_digest(self, digest: Digest, png: bytes) -> DeliveryResult: ...


class Redactor:
    """Replaces secrets, and every longer piece of a secret URL, with ``***``; the URL as a whole
    becomes ``$<variable>``, so an error still says which setting it is about."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._whole = {value: f"${name}" for name, value in secrets.items() if value}
        pieces: set[str] = set()
        for value in self._whole:
            pieces.update(unquote(piece) for piece in _SECRET_PIECE.findall(value))
            pieces.update(_SECRET_PIECE.findall(value))
        # Longest first, so a piece inside another is not left half replaced.
        self._pieces = sorted(pieces, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for value, shown in self._whole.items():
            text = text.replace(value, shown)
        for piece in self._pieces:
            text = text.replace(piece, "***")
        return text[:ERROR_CHARS]


class _Attempts:
    """The retry loop every sender shares: ``attempt`` returns (done, error, retry_after)."""

    def __init__(
        self,
        policy: RetryPolicy,
        redact: Redactor,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy, self.redact, self.sleep, self.clock = policy, redact, sleep, clock

    def run(
        self, attempt: Callable[[float], tuple[bool, str, float | None, bool]]
    ) -> DeliveryResult:
        """``attempt(timeout_s)`` → (delivered, error, retry_after_s, retryable)."""
        started = self.clock()
        tries = 0
        while True:
            tries += 1
            remaining = self.policy.max_total_s - (self.clock() - started)
            delivered, error, retry_after, retryable = attempt(
                max(0.1, min(self.policy.timeout_s, remaining))
            )
            if delivered:
                return DeliveryResult(True, tries)
            wait = next_wait_s(tries, retry_after, self.clock() - started, self.policy)
            if not retryable or wait is None:
                why = "not retried" if not retryable else f"gave up after {tries} attempt(s)"
                return DeliveryResult(False, tries, self.redact(f"{error} ({why})"))
            self.sleep(wait)


class _GuardedSender:
    """``send`` never raises: whatever one event makes a sender throw (a header the e-mail
    library refuses, text a codec cannot encode) is that delivery's failure, not retried, with
    the redacted reason, so the stage dead-letters the event and goes on (a sender touches no
    Kafka and no Elasticsearch: nothing here is an infrastructure fault of the stage)."""

    channel: Channel
    _redact: Redactor

    def send(self, event: AlertEvent) -> DeliveryResult:
        try:
            return self._send(event)
        except Exception as exc:  # any exception here is this event's failure
            reason = f"could not send the event: {type(exc).__name__}: {exc} (not retried)"
            return DeliveryResult(False, 0, self._redact(reason))

    def _send(self, event: AlertEvent) -> DeliveryResult:
        raise NotImplementedError


class WebhookSender(_GuardedSender):
    """A JSON POST of the event, signed with HMAC-SHA256 over a timestamp, the idempotency key
    and the body, keyed by the event id."""

    def __init__(self, channel: Channel, secret: str, url: str = "") -> None:
        self.channel = channel
        self._url = url or channel.url
        if not channel.url:  # from url_env: the same checks the file's url gets
            problem = secure_endpoint_problem(self._url)
            if problem:
                raise NotificationsConfigError(
                    f"channel {channel.name}: ${channel.url_env} {problem}"
                )
        self._secret = secret.encode()
        self._session = requests.Session()
        secrets = {channel.secret_env: secret}
        if channel.url_env:
            secrets[channel.url_env] = self._url
        self._redact = Redactor(secrets)
        self._loop = _Attempts(channel.retry, self._redact)

    def _send(self, event: AlertEvent) -> DeliveryResult:
        return self._post(webhook_body(event), event.event_id, event.event)

    def send_digest(self, digest: Digest, png: bytes) -> DeliveryResult:
        """The day's rows as JSON and the chart as base64, signed like an event."""
        key = digest_idempotency_key(digest.day, self.channel.name)
        return self._post(digest_webhook_body(digest, png), key, DIGEST_EVENT)

    def _post(self, body: bytes, key: str, event: str) -> DeliveryResult:
        def attempt(timeout_s: float) -> tuple[bool, str, float | None, bool]:
            # Signed anew per attempt: a retry after a long backoff is still fresh.
            timestamp = int(time.time())
            headers = {
                "Content-Type": "application/json",
                TIMESTAMP_HEADER: str(timestamp),
                SIGNATURE_HEADER: signature(self._secret, timestamp, key, body),
                IDEMPOTENCY_HEADER: key,
                EVENT_HEADER: event,
            }
            try:
                response = self._session.post(
                    self._url,
                    data=body,
                    headers=headers,
                    timeout=timeout_s,
                    allow_redirects=False,
                )
            except requests.Timeout:
                return False, f"no answer within {timeout_s:.1f}s", None, True
            except requests.RequestException as exc:
                return False, f"{type(exc).__name__}: {exc}", None, True
            with response:
                status = response.status_code
                if 200 <= status < 300:
                    return True, "", None, False
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                return False, f"HTTP {status}", retry_after, status in RETRYABLE_STATUSES

        return self._loop.run(attempt)


class AppriseSender(_GuardedSender):
    """A chat message (or anything apprise speaks) with the event's title and text, inert:
    no mention, link or tag of the product's title gets through (``chat_safe``), and apprise
    is told it is plain text, so it escapes it for services that read Markdown or HTML."""

    def __init__(self, channel: Channel, url: str) -> None:
        import apprise  # here: only a configured apprise channel needs it loaded

        self.channel = channel
        self._apprise = apprise
        self._redact = Redactor({channel.url_env: url})
        self._target = apprise.Apprise()
        if not self._target.add(url):
            raise NotificationsConfigError(
                f"channel {channel.name}: ${channel.url_env} is not a URL apprise knows "
                "(see https://github.com/caronc/apprise/wiki)"
            )
        self._loop = _Attempts(channel.retry, self._redact)

    def _send(self, event: AlertEvent) -> DeliveryResult:
        title, body = message_text(event, chat=True)
        return self._notify(title, body)

    def send_digest(self, digest: Digest, png: bytes) -> DeliveryResult:
        """The table as text, the chart attached (services without attachments get the text)."""
        from apprise.attachment.memory import AttachMemory

        chart = AttachMemory(
            content=png, name=f"digest-{digest.day.isoformat()}.png", mimetype="image/png"
        )
        # The table is ours but its titles are Keepa's: the whole text made inert.
        return self._notify(digest.title, chat_safe(table_text(digest)), attach=chart)

    def _notify(self, title: str, body: str, attach: object = None) -> DeliveryResult:
        def attempt(_timeout_s: float) -> tuple[bool, str, float | None, bool]:
            # apprise reports failures on its logger, not as exceptions: capture them.
            with self._apprise.LogCapture(
                level=self._apprise.logging.WARNING, fmt="%(message)s"
            ) as captured:
                delivered = bool(
                    self._target.notify(
                        title=title,
                        body=body,
                        attach=attach,
                        body_format=self._apprise.NotifyFormat.TEXT,
                    )
                )
            lines = [line for line in captured.getvalue().splitlines() if line.strip()]
            return delivered, lines[-1] if lines else "apprise reported a failure", None, True

        return self._loop.run(attempt)


@dataclass(frozen=True)
class SmtpTarget:
    """Where e-mail goes: ``smtp[s]://[user:password@]host[:port]/?from=…&to=…[&to=…]``."""

    tls: bool
    host: str
    port: int
    username: str
    password: str
    sender: str
    recipients: tuple[str, ...]

    @classmethod
    def parse(cls, url: str, where: str) -> SmtpTarget:
        parts = urlsplit(url.strip())
        query = parse_qs(parts.query)
        try:
            port = parts.port
        except ValueError:
            port = -1
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname or port == -1:
            raise NotificationsConfigError(
                f"{where} is not smtp[s]://[user:password@]host[:port]/?from=…&to=…"
            )
        sender = (query.get("from") or [""])[0]
        recipients = tuple(query.get("to", []))
        if not sender or not recipients:
            raise NotificationsConfigError(f"{where} needs ?from=<address>&to=<address>")
        tls = parts.scheme == "smtps"
        return cls(
            tls,
            parts.hostname,
            port or (465 if tls else 25),
            unquote(parts.username or ""),
            unquote(parts.password or ""),
            sender,
            recipients,
        )


class EmailSender(_GuardedSender):
    """Plain-text e-mail over SMTP (STARTTLS when the server offers it, or smtps), with a
    Message-ID fixed by the event id: a resend after a crash is recognisably the same mail.

    TLS verifies the server's certificate and name (the system's CAs, or the channel's
    ``ca_file``); a password is sent only over TLS, or to a loopback host."""

    def __init__(self, channel: Channel, url: str) -> None:
        self.channel = channel
        self._target = SmtpTarget.parse(url, f"channel {channel.name}: ${channel.url_env}")
        self._redact = Redactor({channel.url_env: url, "password": self._target.password})
        self._loop = _Attempts(channel.retry, self._redact)
        try:
            self._tls = ssl.create_default_context(cafile=channel.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            raise NotificationsConfigError(
                f"channel {channel.name}: ca_file {channel.ca_file!r} is not a readable PEM file "
                f"of CA certificates ({exc})"
            ) from None

    def message(self, event: AlertEvent) -> EmailMessage:
        title, body = message_text(event)
        message = self._headed(title, event.event_id)
        message.set_content(body)
        return message

    def _headed(self, subject: str, key: str) -> EmailMessage:
        """Subject, addresses, date, a Message-ID fixed by ``key`` and the key itself."""
        target = self._target
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = target.sender
        message["To"] = ", ".join(target.recipients)
        message["Date"] = formatdate(localtime=False, usegmt=True)
        domain = target.sender.rpartition("@")[2] or "arbitrage.invalid"
        message["Message-ID"] = email_message_id(key, domain)
        message[IDEMPOTENCY_HEADER] = key
        return message

    def digest_message(self, digest: Digest, png: bytes) -> EmailMessage:
        """The table as text and HTML, the chart attached; Message-ID fixed by the digest key."""
        key = digest_idempotency_key(digest.day, self.channel.name)
        message = self._headed(digest.title, key)
        domain = self._target.sender.rpartition("@")[2] or "arbitrage.invalid"
        message.replace_header("Message-ID", digest_message_id(key, domain))
        message.set_content(table_text(digest))
        message.add_alternative(table_html(digest), subtype="html")
        message.add_attachment(
            png, maintype="image", subtype="png", filename=f"digest-{digest.day.isoformat()}.png"
        )
        return message

    def _send(self, event: AlertEvent) -> DeliveryResult:
        return self._deliver(self.message(event))

    def send_digest(self, digest: Digest, png: bytes) -> DeliveryResult:
        return self._deliver(self.digest_message(digest, png))

    def _deliver(self, message: EmailMessage) -> DeliveryResult:
        target = self._target

        def attempt(timeout_s: float) -> tuple[bool, str, float | None, bool]:
            try:
                if target.tls:
                    smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                        target.host, target.port, timeout=timeout_s, context=self._tls
                    )
                else:
                    smtp = smtplib.SMTP(target.host, target.port, timeout=timeout_s)
                with smtp:
                    encrypted = target.tls
                    if not target.tls:
                        smtp.ehlo()
                        if smtp.has_extn("starttls"):
                            smtp.starttls(context=self._tls)
                            smtp.ehlo()
                            encrypted = True
                    if target.username:
                        problem = plaintext_login_problem(target.host, encrypted)
                        if problem:
                            return False, problem, None, False
                        smtp.login(target.username, target.password)
                    smtp.send_message(message)
            except smtplib.SMTPResponseException as exc:
                # 4xx: try again later; 5xx: the server refuses this mail.
                return False, f"SMTP {exc.smtp_code}", None, 400 <= exc.smtp_code < 500
            except ssl.SSLCertVerificationError as exc:
                # Not the server's mood: its certificate will not verify on the next try either.
                why = exc.verify_message or exc
                return False, f"the certificate of {target.host} did not verify: {why}", None, False
            except TimeoutError:
                return False, f"no answer within {timeout_s:.1f}s", None, True
            except (smtplib.SMTPException, OSError) as exc:
                return False, f"{type(exc).__name__}: {exc}", None, True
            return True, "", None, False

        return self._loop.run(attempt)


@dataclass(frozen=True)
class Channels:
    """What the notifications stage delivers with: the file's settings and a sender per channel."""

    config: NotificationsConfig
    senders: list[Sender]


def build_senders(config: NotificationsConfig, env: Mapping[str, str]) -> list[Sender]:
    """One sender per enabled channel; a variable the file names but the environment lacks is
    an error naming both (never a silent channel that delivers nothing)."""
    senders: list[Sender] = []
    for channel in config.channels:
        values = {}
        for variable in (channel.secret_env, channel.url_env):
            if not variable:
                continue
            values[variable] = env.get(variable, "").strip()
            if not values[variable]:
                raise NotificationsConfigError(
                    f"{config.path}: channel {channel.name} reads {variable}, which is not set; "
                    "set it or disable the channel (enabled = false)"
                )
        if channel.type == "webhook":
            url = values.get(channel.url_env, "")
            senders.append(WebhookSender(channel, values[channel.secret_env], url))
        elif channel.type == "apprise":
            senders.append(AppriseSender(channel, values[channel.url_env]))
        else:
            senders.append(EmailSender(channel, values[channel.url_env]))
    return senders


def load_channels(config_file: str, env: Mapping[str, str]) -> Channels:
    """The channels file's settings with a sender per channel, secrets read from ``env``."""
    config = load_notifications_config(config_file)
    return Channels(config, build_senders(config, env))
