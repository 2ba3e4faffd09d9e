"""The notifications stage's pure part: the channels file, the event rule, filters, the
signature, Retry-After and the retry schedule; and the redaction of secrets in errors."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from arbitrage.clients.notify import Redactor, SmtpTarget, build_senders
from arbitrage.domain.notifications import (
    REPLAY_WINDOW_S,
    AlertEvent,
    NotAnEventError,
    alert_event,
    backoff_s,
    chat_safe,
    delivery_id,
    email_message_id,
    filtered_out,
    message_text,
    next_wait_s,
    one_line,
    parse_retry_after,
    plaintext_login_problem,
    signature,
    signature_valid,
    webhook_body,
)
from arbitrage.domain.notifications_config import (
    DEFAULT_NOTIFICATIONS_FILE,
    NotificationsConfigError,
    RetryPolicy,
    load_notifications_config,
    parse_notifications_config,
)

REPO = Path(__file__).resolve().parents[2]


def alert(**fields: object) -> dict:
    base = {
        "alert_id": "a1b2c3",
        "asin": "B0TEST0001",
        "title": "A thing",
        "buy_market": "DE",
        "sell_market": "FR",
        "buy_price": {"amount": 4500, "currency": "EUR"},
        "sell_price": {"amount": 9000, "currency": "EUR"},
        "profit_eur_cents": 1500,
        "roi": 0.3,
        "detected_at": "2026-11-26T10:00:00.000Z",
    }
    return {**base, **fields}


def webhook(**extra: object) -> dict:
    return {
        "name": "hook",
        "type": "webhook",
        "url": "https://hooks.example.com/x",
        "secret_env": "HOOK_SECRET",
        **extra,
    }


# --- the channels file ------------------------------------------------------------------------


def test_the_shipped_default_enables_no_channel() -> None:
    config = load_notifications_config(DEFAULT_NOTIFICATIONS_FILE)
    assert config.channels == ()


def test_the_example_file_parses_and_shows_every_channel_type() -> None:
    import tomllib

    path = REPO / "config" / "notifications.example.toml"
    data = tomllib.loads(path.read_text())
    assert {c["type"] for c in data["channel"]} == {"webhook", "apprise", "email"}
    for channel in data["channel"]:
        channel["enabled"] = True
    config = parse_notifications_config(data, str(path))
    hook = config.channels[0]
    assert hook.filter.routes == {("DE", "FR"), ("DE", "GB")}
    assert hook.filter.events == {"opened", "updated", "closed"}
    assert hook.retry.max_attempts == 4  # from [defaults.retry]
    assert config.channels[1].retry.max_attempts == 2  # its own [channel.retry] wins
    assert config.channels[1].filter.events == {"opened"}  # [defaults.filter]
    assert [c.digest for c in config.channels] == [True, False, True]  # the daily digest
    assert config.secret_variables == (
        "ARBITRAGE_WEBHOOK_SECRET",
        "ARBITRAGE_CHAT_URL",
        "ARBITRAGE_EMAIL_URL",
    )


def test_a_missing_file_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(NotificationsConfigError, match="ARBITRAGE_NOTIFICATIONS_FILE"):
        load_notifications_config(tmp_path / "nope.toml")


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[[channel]\n")
    with pytest.raises(NotificationsConfigError, match=r"bad\.toml is not valid TOML"):
        load_notifications_config(path)


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        (webhook(name="Bad Name"), "name must be"),
        (webhook(type="pager"), "type must be one of webhook, apprise, email"),
        (webhook(url="http://hooks.example.com/x"), "url must be https"),
        (webhook(secret_env="s3cr3t-value!"), "must name an environment variable"),
        (webhook(url_env="X"), "either url or url_env"),
        (webhook(colour="red"), "unknown key.*colour"),
        (webhook(digest="no"), "digest must be true or false"),
        (webhook(filter={"routes": ["DE-FR"]}), "routes: 'DE-FR' is not BUY->SELL"),
        (webhook(filter={"routes": ["DE->US"]}), "is not BUY->SELL of known markets"),
        (webhook(filter={"events": ["opened", "gone"]}), "events must list some of"),
        (webhook(filter={"buy_markets": ["XX"]}), "buy_markets: unknown market"),
        (webhook(filter={"min_roi": "high"}), "min_roi must be a number"),
        (webhook(filter={"min_profit_eur_cents": -1}), "min_profit_eur_cents must be an int"),
        (webhook(retry={"timeout_s": 0}), "timeout_s must be a number of seconds > 0"),
        (webhook(retry={"timeout_s": 10, "max_total_s": 5}), "max_total_s .* at least timeout"),
        ({"name": "chat", "type": "apprise", "url": "tgram://x/y"}, "url does not apply"),
        ({"name": "chat", "type": "apprise"}, "url_env must be a non-empty string"),
    ],
)
def test_config_errors_name_the_file_channel_and_key(channel: dict, message: str) -> None:
    with pytest.raises(NotificationsConfigError, match=message) as error:
        parse_notifications_config({"channel": [channel]}, "notifications.toml")
    assert str(error.value).startswith("notifications.toml")


def test_a_secret_pasted_into_secret_env_is_not_echoed() -> None:
    with pytest.raises(NotificationsConfigError) as error:
        parse_notifications_config(
            {"channel": [webhook(secret_env="hunter2-very-secret")]}, "n.toml"
        )
    assert "hunter2" not in str(error.value)


def test_disabled_channels_are_left_out_and_names_must_differ() -> None:
    config = parse_notifications_config(
        {"channel": [webhook(enabled=False), webhook(name="other")]}, "n.toml"
    )
    assert [c.name for c in config.channels] == ["other"]
    with pytest.raises(NotificationsConfigError, match="two enabled channels are named 'hook'"):
        parse_notifications_config({"channel": [webhook(), webhook()]}, "n.toml")


def test_an_unset_secret_variable_is_an_error_naming_it() -> None:
    config = parse_notifications_config({"channel": [webhook()]}, "n.toml")
    with pytest.raises(NotificationsConfigError, match="reads HOOK_SECRET, which is not set"):
        build_senders(config, {})


def test_a_webhook_address_with_a_token_may_come_from_a_variable() -> None:
    channel = webhook(url_env="HOOK_URL")
    del channel["url"]
    config = parse_notifications_config({"channel": [channel]}, "n.toml")
    assert config.secret_variables == ("HOOK_URL", "HOOK_SECRET")
    with pytest.raises(NotificationsConfigError, match="reads HOOK_URL, which is not set"):
        build_senders(config, {"HOOK_SECRET": "s"})
    with pytest.raises(NotificationsConfigError, match=r"\$HOOK_URL must be https"):
        build_senders(config, {"HOOK_SECRET": "s", "HOOK_URL": "http://example.com/T0KEN"})
    (sender,) = build_senders(config, {"HOOK_SECRET": "s", "HOOK_URL": "https://x.example/T"})
    assert sender.channel.url_env == "HOOK_URL"


# --- the event rule and filters ---------------------------------------------------------------


def test_an_alert_without_lifecycle_fields_is_an_opened_event_keyed_by_its_alert_id() -> None:
    event = alert_event(alert())
    assert (event.event, event.event_id, event.alert_id) == ("opened", "a1b2c3", "a1b2c3")
    assert event.message["event"] == "opened"
    assert event.message["event_id"] == "a1b2c3"


def test_a_lifecycle_event_keeps_its_own_fields() -> None:
    event = alert_event(alert(event="updated", event_id="ev-9", opportunity_id="op-1", version=2))
    assert (event.event, event.event_id) == ("updated", "ev-9")
    assert event.message["version"] == 2


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        ({"asin": "B0X"}, "no alert_id"),
        (alert(asin=""), "has no asin"),
        (alert(event="reopened"), "unknown event 'reopened'"),
        (alert(event_id=7), "event_id must be a string"),
    ],
)
def test_messages_that_are_not_events(message: dict, reason: str) -> None:
    with pytest.raises(NotAnEventError, match=reason):
        alert_event(message)


def channel_filter(**fields: object):
    return (
        parse_notifications_config({"channel": [webhook(filter=fields)]}, "n.toml")
        .channels[0]
        .filter
    )


@pytest.mark.parametrize(
    ("fields", "message", "reason"),
    [
        ({}, alert(), None),
        ({}, alert(event="updated"), "event"),
        ({"events": ["updated"]}, alert(event="updated"), None),
        ({"min_profit_eur_cents": 1500}, alert(), None),
        ({"min_profit_eur_cents": 1501}, alert(), "profit"),
        ({"min_roi": 0.3}, alert(), None),
        ({"min_roi": 0.31}, alert(), "roi"),
        ({"min_roi": 0.1}, alert(roi=None), "roi"),
        ({"routes": ["DE->FR"]}, alert(), None),
        ({"routes": ["DE->GB"]}, alert(), "route"),
        ({"buy_markets": ["IT"]}, alert(), "route"),
        ({"sell_markets": ["FR", "GB"]}, alert(), None),
        # A closed event carries the route but need not carry figures.
        ({"events": ["closed"], "min_profit_eur_cents": 9999}, alert(event="closed"), None),
    ],
)
def test_filters(fields: dict, message: dict, reason: str | None) -> None:
    assert filtered_out(channel_filter(**fields), alert_event(message)) == reason


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        # Issue 24, 3: each of these jammed the stage or could.
        ({"asin": "B0TEST0001\n"}, "asin must be 10 characters"),
        ({"asin": "B0TE\nST0001"}, "asin must be 10 characters"),
        ({"asin": "b0test0001"}, "asin must be 10 characters"),
        ({"asin": ["B0TEST0001"]}, "asin must be 10 characters"),
        ({"event_id": "ev-1\n"}, "event_id must be a string of 1-200 visible ASCII"),
        ({"event_id": "ev-1\r\nBcc: x@example.com"}, "event_id must be"),
        ({"event_id": "\U0001f4a3" * 200}, "event_id must be"),
        ({"event_id": "x" * 201}, "event_id must be"),
        ({"event_id": " ev-1"}, "event_id must be"),
        ({"event_id": None}, "has no event_id"),
        ({"alert_id": "a\x00b"}, "alert_id must be"),
        ({"alert_id": "a\u202eb"}, "alert_id must be"),
        ({"alert_id": 17}, "alert_id must be"),
        ({"opportunity_id": "o" * 40_000}, "opportunity_id must be"),
        ({"buy_market": "US"}, "buy_market must be one of"),
        ({"sell_market": "fr\n"}, "sell_market must be one of"),
        ({"sell_market": None}, "sell_market must be one of"),
        ({"event": ["opened"]}, "unknown event"),
        ({"profit_eur_cents": "1500"}, "profit_eur_cents has the wrong type"),
        ({"profit_eur_cents": True}, "profit_eur_cents has the wrong type"),
        ({"roi": "0.3"}, "roi has the wrong type"),
        ({"title": {"text": "x"}}, "title has the wrong type"),
        ({"buy_price": 4500}, "buy_price has the wrong type"),
    ],
)
def test_hostile_messages_are_not_events(fields: dict, reason: str) -> None:
    with pytest.raises(NotAnEventError, match=reason) as error:
        alert_event(alert(**fields))
    assert len(str(error.value)) < 300  # a reason shows the value cut, never 40 kB of it
    assert "\n" not in str(error.value)


def test_ids_may_be_any_visible_ascii_up_to_200_characters() -> None:
    long_id = "B0TEST0001-DE-FR-fees_v2-rules_v1 (beta)-v12" + "x" * 156
    assert len(long_id) == 200
    assert alert_event(alert(event_id=long_id, opportunity_id=None)).event_id == long_id


def test_a_delivery_id_always_fits_elasticsearch() -> None:
    assert delivery_id("hook", "ev-1") == "hook:ev-1"
    # Within the event rule it is always <channel>:<event_id> (at most 241 bytes) ...
    assert len(delivery_id("c" * 40, "e" * 200).encode()) == 241
    # ... and an id past it could never make a record Elasticsearch refuses.
    hashed = delivery_id("hook", "\U0001f4a3" * 200)
    assert hashed.startswith("hook:sha256:") and len(hashed.encode()) < 512
    assert hashed == delivery_id("hook", "\U0001f4a3" * 200)


def test_delivery_ids_and_message_ids_are_stable() -> None:
    assert delivery_id("hook", "ev-1") == "hook:ev-1"
    assert email_message_id("ev-1", "example.com") == email_message_id("ev-1", "example.com")
    assert email_message_id("ev-1").endswith("@arbitrage.invalid>")
    assert email_message_id("ev-1") != email_message_id("ev-2")


def test_message_text() -> None:
    title, body = message_text(alert_event(alert()))
    assert title == "[opened] B0TEST0001 DE→FR: +15.00 EUR (30%)"
    assert "buy 45.00 EUR, sell 90.00 EUR" in body


def test_a_hostile_title_stays_on_its_line() -> None:
    """A product title is Keepa's text: line breaks, a bidi override and a zero-width space
    cannot add lines to the message nor reverse it; a very long one is cut."""
    title = "Good\r\nASIN B0FAKE0000, route GB→DE\u202e\u200b " + "y" * 1000
    _, body = message_text(alert_event(alert(title=title)))
    first, second = body.splitlines()[:2]
    assert first.startswith("Good ASIN B0FAKE0000, route GB→DE yyy") and len(first) == 300
    assert second == "ASIN B0TEST0001, route DE→FR (opened)"
    assert len(body.splitlines()) == 6


def test_one_line() -> None:
    assert one_line("a\n\tb\x00c\u2028d  e", 80) == "a b c d e"
    assert one_line("abcdef", 4) == "abc…"
    assert one_line(None, 10) == "None"


@pytest.mark.parametrize(
    ("title", "inert"),
    [
        ("@everyone buy now", "＠everyone buy now"),
        ("@here", "＠here"),
        ("ping <@123456789> and <@&987>", "ping ‹＠123456789› and ‹＠&987›"),
        ("<!channel> <!here>", "‹!channel› ‹!here›"),
        ("[Refund](https://evil.example)", "［Refund］(https://evil.example)"),
        ("![x](https://evil.example/p.png)", "!［x］(https://evil.example/p.png)"),
        ("<https://evil.example|Amazon>", "‹https://evil.example|Amazon›"),
        ("<a href='x'>Deal</a>", "‹a href='x'›Deal‹/a›"),
        ("Plain title, 2 x 100 ml (50%)", "Plain title, 2 x 100 ml (50%)"),
    ],
)
def test_chat_text_has_no_mention_link_or_tag(title: str, inert: str) -> None:
    assert chat_safe(title) == inert
    _, body = message_text(alert_event(alert(title=title)), chat=True)
    assert body.splitlines()[0] == inert


def test_chat_text_neutralises_ids_too_but_mail_keeps_them() -> None:
    event = alert_event(alert(event_id="ev@<x>[1]"))
    assert "event ev＠‹x›［1］" in message_text(event, chat=True)[1]
    assert "event ev@<x>[1]" in message_text(event)[1]


# --- e-mail: when a password may go without TLS -----------------------------------------------


@pytest.mark.parametrize(
    ("host", "tls", "allowed"),
    [
        ("smtp.example.com", False, False),
        ("192.168.1.10", False, False),
        ("10.0.0.1", False, False),
        ("::2", False, False),
        ("127.0.0.1.example.com", False, False),
        ("localhost.example.com", False, False),
        ("smtp.example.com", True, True),
        ("127.0.0.1", False, True),
        ("127.8.9.10", False, True),
        ("::1", False, True),
        ("[::1]", False, True),
        ("localhost", False, True),
        ("LOCALHOST.", False, True),
    ],
)
def test_a_password_goes_in_the_clear_only_to_a_loopback_host(
    host: str, tls: bool, allowed: bool
) -> None:
    problem = plaintext_login_problem(host, tls)
    assert (problem is None) is allowed, problem
    if problem:
        assert "without TLS" in problem


def test_an_email_channel_may_name_a_ca_file_and_nothing_else_may(tmp_path: Path) -> None:
    mail = {"name": "mail", "type": "email", "url_env": "MAIL_URL", "ca_file": "/etc/ca.pem"}
    (channel,) = parse_notifications_config({"channel": [mail]}, "n.toml").channels
    assert channel.ca_file == "/etc/ca.pem"
    with pytest.raises(NotificationsConfigError, match="ca_file does not apply"):
        parse_notifications_config({"channel": [webhook(ca_file="/etc/ca.pem")]}, "n.toml")
    missing = {**mail, "ca_file": str(tmp_path / "none.pem")}
    config = parse_notifications_config({"channel": [missing]}, "n.toml")
    with pytest.raises(NotificationsConfigError, match=r"ca_file .* is not a readable PEM"):
        build_senders(config, {"MAIL_URL": "smtps://mail.example.com/?from=a@x&to=b@y"})


# --- signature --------------------------------------------------------------------------------


def test_the_signature_covers_the_timestamp_the_key_and_the_exact_body() -> None:
    body = webhook_body(alert_event(alert()))
    signed = b"1764410400.a1b2c3." + body
    expected = "sha256=" + hmac.new(b"k", signed, hashlib.sha256).hexdigest()
    assert signature(b"k", 1764410400, "a1b2c3", body) == expected
    now = 1764410400 + 10
    assert signature_valid(b"k", body, "a1b2c3", "1764410400", expected, now)
    assert not signature_valid(b"k", body + b" ", "a1b2c3", "1764410400", expected, now)
    assert not signature_valid(b"other", body, "a1b2c3", "1764410400", expected, now)
    # The same body under another key, or another time, is not what was signed.
    assert not signature_valid(b"k", body, "a1b2c4", "1764410400", expected, now)
    assert not signature_valid(b"k", body, "a1b2c3", "1764410401", expected, now)


@pytest.mark.parametrize(
    ("offset_s", "valid"), [(0, True), (300, True), (-300, True), (301, False), (-301, False)]
)
def test_a_receiver_refuses_a_timestamp_outside_its_replay_window(
    offset_s: int, valid: bool
) -> None:
    """A captured request replayed later (or one from a clock far ahead) fails verification."""
    body, stamp = b"{}", 1764410400
    header = signature(b"k", stamp, "key", body)
    assert REPLAY_WINDOW_S == 300
    assert signature_valid(b"k", body, "key", str(stamp), header, stamp + offset_s) is valid


@pytest.mark.parametrize("stamp", ["", "soon", "-5", "1e9", " 1764410400", "１７６４"])
def test_an_unreadable_timestamp_is_refused(stamp: str) -> None:
    header = signature(b"k", 1764410400, "key", b"{}")
    assert not signature_valid(b"k", b"{}", "key", stamp, header, 1764410400)


def test_the_body_is_the_event_with_its_rule_applied() -> None:
    event = AlertEvent("opened", "e", "a", "B0", {"b": 1, "a": [1, 2]})
    assert webhook_body(event) == b'{"a":[1,2],"b":1}'


# --- Retry-After and backoff ------------------------------------------------------------------

NOW = datetime(2026, 11, 29, 10, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 120 ", 120.0),
        (format_datetime(NOW + timedelta(seconds=30), usegmt=True), 30.0),
        (format_datetime(NOW - timedelta(seconds=30), usegmt=True), 0.0),
        ("soon", None),
        ("-3", None),
    ],
)
def test_retry_after(header: str | None, seconds: float | None) -> None:
    assert parse_retry_after(header, NOW) == seconds


POLICY = RetryPolicy(
    max_attempts=5,
    timeout_s=1.0,
    backoff_base_s=0.5,
    backoff_cap_s=3.0,
    retry_after_cap_s=10.0,
    max_total_s=20.0,
)


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_s(n, POLICY) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_next_wait() -> None:
    assert next_wait_s(1, None, 0.0, POLICY) == 0.5
    assert next_wait_s(5, None, 0.0, POLICY) is None  # attempts used up
    assert next_wait_s(1, 4.0, 0.0, POLICY) == 4.0  # Retry-After honoured …
    assert next_wait_s(1, 300.0, 0.0, POLICY) == 10.0  # … up to its cap
    assert next_wait_s(3, 0.0, 0.0, POLICY) == 2.0  # never sooner than the backoff
    # The wait and one more request must fit in the delivery's bound.
    assert next_wait_s(1, None, 18.5, POLICY) == 0.5
    assert next_wait_s(1, None, 18.6, POLICY) is None


# --- redaction --------------------------------------------------------------------------------


def test_redaction_hides_the_url_and_its_pieces() -> None:
    url = "tgram://123456789:AAH-token-part/987654321"
    redact = Redactor({"CHAT_URL": url})
    assert redact(f"failed to send to {url}") == "failed to send to $CHAT_URL"
    text = redact("HTTP 401 for bot AAH-token-part, chat 987654321")
    assert "AAH-token-part" not in text and "987654321" not in text


def test_smtp_url() -> None:
    target = SmtpTarget.parse("smtp://u%40x:p%3Ass@127.0.0.1:2525/?from=a@x&to=b@y&to=c@z", "E")
    assert (target.host, target.port, target.tls) == ("127.0.0.1", 2525, False)
    assert (target.username, target.password) == ("u@x", "p:ss")
    assert target.recipients == ("b@y", "c@z")
    with pytest.raises(NotificationsConfigError, match="needs"):
        SmtpTarget.parse("smtps://host/?from=a@x", "E")
