"""E-mail over real SMTP servers on 127.0.0.1 (aiosmtpd): TLS that verifies the server with a
throwaway CA made here by openssl, the refusal of a certificate nothing vouches for, when a
password may be sent, and an event the e-mail library refuses (its failure, not the run's)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from arbitrage.clients.notify import EmailSender
from arbitrage.domain.notifications import AlertEvent, alert_event, email_message_id
from arbitrage.domain.notifications_config import parse_notifications_config
from tests.notify_receivers import MailReceiver, TlsFiles, mail_receiver, tls_files

pytestmark = pytest.mark.integration

# Quick: a refused certificate must fail at once, not after retries.
RETRY = {"max_attempts": 3, "timeout_s": 2.0, "backoff_base_s": 0.05, "max_total_s": 5.0}


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return tls_files(tmp_path_factory.mktemp("tls"))


def sender(url: str, ca_file: Path | None = None) -> EmailSender:
    raw = {"name": "mail", "type": "email", "url_env": "MAIL_URL", "retry": RETRY}
    if ca_file is not None:
        raw["ca_file"] = str(ca_file)
    (channel,) = parse_notifications_config({"channel": [raw]}, "n.toml").channels
    return EmailSender(channel, url)


def event(n: int = 1) -> AlertEvent:
    return alert_event(
        {
            "alert_id": f"mail-{n}",
            "asin": "B0MAIL0001",
            "title": "A thing",
            "buy_market": "DE",
            "sell_market": "FR",
            "profit_eur_cents": 1500,
            "roi": 0.3,
        }
    )


def arrived(mail: MailReceiver, count: int) -> list:
    deadline = time.monotonic() + 5
    while len(mail.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return mail.messages


@pytest.fixture
def smtps(tls: TlsFiles) -> Iterator[MailReceiver]:
    with mail_receiver("implicit", tls.server, login=True) as mail:
        yield mail


def test_smtps_verifies_the_server_by_the_channels_ca_and_logs_in_over_tls(
    smtps: MailReceiver, tls: TlsFiles
) -> None:
    url = smtps.url(scheme="smtps", credentials="alerts:pa55word")
    result = sender(url, tls.ca).send(event())
    assert result.delivered, result
    assert [m["Message-ID"] for m in arrived(smtps, 1)] == [
        email_message_id("mail-1", "example.com")
    ]
    assert smtps.logins == [("alerts", "pa55word", True)]
    assert smtps.encrypted == [True]


@pytest.mark.parametrize("our_ca", [False, True])
def test_smtps_refuses_a_certificate_no_ca_vouches_for(tls: TlsFiles, our_ca: bool) -> None:
    """A self-signed certificate, checked against the system's CAs or ours: before, smtps used
    no verifying context and sent the password and the mail to whoever answered."""
    with mail_receiver("implicit", tls.self_signed, login=True) as mail:
        url = mail.url(scheme="smtps", credentials="alerts:pa55word")
        result = sender(url, tls.ca if our_ca else None).send(event())
    assert not result.delivered
    assert "did not verify" in result.error, result.error
    assert result.attempts == 1  # not retried: it will not verify next time either
    assert "pa55word" not in result.error
    assert mail.logins == [] and mail.messages == []


def test_smtps_refuses_a_certificate_for_another_name(tls: TlsFiles) -> None:
    """Our CA signed it, but for mail.example.com: reached as 127.0.0.1, it is refused."""
    with mail_receiver("implicit", tls.other_name) as mail:
        result = sender(mail.url(scheme="smtps"), tls.ca).send(event())
    assert not result.delivered and "did not verify" in result.error, result.error
    assert "mismatch" in result.error  # (the host itself is redacted: it is part of the URL)
    assert mail.messages == []


def test_smtps_by_name_verifies_against_the_name(smtps: MailReceiver, tls: TlsFiles) -> None:
    result = sender(smtps.url(scheme="smtps", host="localhost"), tls.ca).send(event())
    assert result.delivered, result


def test_starttls_verifies_the_server_then_logs_in(tls: TlsFiles) -> None:
    with mail_receiver("starttls", tls.server, login=True) as mail:
        url = mail.url(credentials="alerts:pa55word")
        result = sender(url, tls.ca).send(event())
        assert result.delivered, result
        assert len(arrived(mail, 1)) == 1
    assert mail.logins == [("alerts", "pa55word", True)]
    assert mail.encrypted == [True]


def test_starttls_refuses_a_certificate_no_ca_vouches_for(tls: TlsFiles) -> None:
    with mail_receiver("starttls", tls.self_signed, login=True) as mail:
        result = sender(mail.url(credentials="alerts:pa55word"), tls.ca).send(event())
    assert not result.delivered and "did not verify" in result.error, result
    assert mail.logins == [] and mail.messages == []


def test_a_password_goes_without_tls_only_to_a_loopback_host() -> None:
    """The server offers no STARTTLS: on 127.0.0.1 the login is allowed (a local relay). The
    refusal for any other host is plaintext_login_problem (tests/unit): no other host can be
    reached from a test."""
    with mail_receiver(login=True) as mail:
        result = sender(mail.url(credentials="alerts:pa55word")).send(event())
        assert result.delivered, result
        assert len(arrived(mail, 1)) == 1
    assert mail.logins == [("alerts", "pa55word", False)]


def test_an_event_the_mail_library_refuses_is_that_deliverys_failure(
    tls: TlsFiles,
) -> None:
    """An event that got past no rule (built here directly) with a line break in its id: the
    e-mail library refuses the header. Before, the exception left the stage and failed the
    run, every rerun the same way; now it is this delivery's failure, with the reason."""
    with mail_receiver() as mail:
        mailer = sender(mail.url())
        hostile = replace(event(), event_id="ev-1\r\nBcc: someone@example.com")
        result = mailer.send(hostile)
        good = mailer.send(event(2))
        assert good.delivered, good
        assert len(arrived(mail, 1)) == 1
    assert not result.delivered
    assert result.attempts == 0
    assert "could not send the event: ValueError" in result.error, result.error
    assert "linefeed or carriage return" in result.error
