"""The notifications stage against the real broker and Elasticsearch, delivering to real
receivers started here: an HTTP server (webhooks) and an SMTP server (e-mail)."""

from __future__ import annotations

import base64
import json
import random
import time
from dataclasses import replace
from pathlib import Path

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.notify import Channels, build_senders
from arbitrage.domain import topics
from arbitrage.domain.notifications import IDEMPOTENCY_HEADER, email_message_id
from arbitrage.domain.notifications_config import load_notifications_config
from arbitrage.domain.stage_specs import NOTIFICATIONS
from arbitrage.engine.ranges import PartitionRange, plan_ranges
from arbitrage.engine.runner import StageRunner
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.engine.stats import StageStats
from arbitrage.settings import Settings
from assets.stage_assets import PARTITION_TAG, STAGE_TAG
from pipelines.definitions import build_definitions
from tests.dagster.helpers import temp_instance
from tests.dagster.test_sensors import ranges, tick
from tests.definitions import SAMPLE_DEFS
from tests.integration.kafka_io import produce, read_all
from tests.integration.test_stages import CONFIG, run_job
from tests.notify_receivers import MailReceiver, mail_receiver, webhook_receiver

pytestmark = pytest.mark.integration

SECRET = b"test-webhook-secret"
SECRET_ENV = "TEST_HOOK_SECRET"
# Quick retries: the receivers answer at once or never.
FAST_RETRY = """
[defaults.retry]
max_attempts = 4
timeout_s = 0.5
backoff_base_s = 0.05
backoff_cap_s = 0.2
max_total_s = 3.0
"""


def alert(n: int, **fields: object) -> dict:
    """An alert as the arbitrage stage publishes it today (no lifecycle fields)."""
    return {
        "schema_version": 1,
        "alert_id": f"alert-{n:04d}",
        "asin": f"B0NOTE{n:04d}",
        "title": f"Thing {n}",
        "buy_market": "DE",
        "sell_market": "FR",
        "buy_price": {"amount": 4500, "currency": "EUR"},
        "sell_price": {"amount": 9000, "currency": "EUR"},
        "profit_eur_cents": 500 + 100 * n,
        "roi": 0.2,
        "detected_at": "2026-11-29T10:00:00.000Z",
        **fields,
    }


# Hostile alert records (issue 24, 3): each must be dead-lettered before any delivery of its
# batch, with a reason, and never stall the partition. The oracle is this construction.
HOSTILE_KINDS = 10


def hostile_alert(n: int, rng: random.Random) -> tuple[str, bytes, str]:
    """The n-th hostile record: (key, value, what is wrong with it)."""
    good = alert(n, asin=f"B0HX{n:06d}", alert_id=f"hostile-{n}")
    kind = n % HOSTILE_KINDS
    if kind == 0:
        where = rng.randint(0, 10)
        asin = good["asin"][:where] + rng.choice(["\n", "\r\n", "\r"]) + good["asin"][where:]
        message, why = {**good, "asin": asin}, "line break in asin"
    elif kind == 1:
        field = rng.choice(["event_id", "alert_id", "opportunity_id"])
        text = f"ev-{n}" + rng.choice(["\n", "\r", "\r\nBcc: x@example.com", "\x00", "\x1b[2J"])
        message, why = {**good, field: text}, f"control character in {field}"
    elif kind == 2:
        # 200 four-byte characters: 800 bytes, over Elasticsearch's 512-byte id limit.
        field = rng.choice(["event_id", "alert_id"])
        message, why = {**good, field: "\U0001f4a3" * 200}, f"200 emoji as {field}"
    elif kind == 3:
        size = rng.choice([201, 513, 5_000, 100_000])
        field = rng.choice(["event_id", "alert_id", "opportunity_id"])
        message, why = {**good, field: "x" * size}, f"{field} of {size} characters"
    elif kind == 4:
        field, value = rng.choice(
            [
                ("alert_id", 7),
                ("asin", ["B0HX000001"]),
                ("event_id", {"id": 1}),
                ("roi", "high"),
                ("roi", True),
                ("profit_eur_cents", "500"),
                ("profit_eur_cents", 5.5),
                ("title", 42),
                ("buy_price", "45 EUR"),
                ("detected_at", 1764410400000),
                ("event", 1),
            ]
        )
        message, why = {**good, field: value}, f"{field} of the wrong type"
    elif kind == 5:
        field = rng.choice(["alert_id", "asin", "buy_market", "sell_market"])
        message = {k: v for k, v in good.items() if k != field}
        why = f"no {field}"
    elif kind == 6:
        asin = rng.choice(["b0hx000001", "B0HX00001", "B0HX0000001", "B0HX-00001", "Ｂ0HX000001"])
        message, why = {**good, "asin": asin}, f"bad ASIN {asin!r}"
    elif kind == 7:
        field, value = rng.choice(
            [("event", "reopened"), ("buy_market", "US"), ("sell_market", "de"), ("event", "")]
        )
        message, why = {**good, field: value}, f"{field} {value!r}"
    elif kind == 8:
        raw = rng.choice(
            [b"", b"null", b"[]", b'"text"', b"{", b"\xc3\x28", b'{"alert_id": 1e400}', b"{}"]
        )
        return good["asin"], raw, f"not an alert object: {raw!r}"
    else:
        message, why = {**good, "event_id": " padded-id "}, "event_id with spaces at its ends"
    return good["asin"], json.dumps(message).encode(), why


def publish(kafka: KafkaClient, alerts: list[dict], raw: list[tuple[str, bytes]] = ()) -> None:
    produce(kafka, topics.ARBITRAGE_ALERTS, [(a["asin"], json.dumps(a).encode()) for a in alerts])
    if raw:
        produce(kafka, topics.ARBITRAGE_ALERTS, list(raw))


def channels(tmp_path: Path, text: str, env: dict[str, str]) -> Channels:
    path = tmp_path / "notifications.toml"
    path.write_text(FAST_RETRY + text)
    config = load_notifications_config(path)
    return Channels(config, build_senders(config, env))


def hook(name: str, url: str, extra: str = "") -> str:
    return (
        f'[[channel]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n'
        f'secret_env = "{SECRET_ENV}"\n{extra}\n'
    )


def run_stage(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    chans: Channels,
    group: str = NOTIFICATIONS.live_group,
    batch_size: int = 50,
    max_reject_ratio: float = 0.5,
) -> StageStats:
    if group == NOTIFICATIONS.live_group:
        ranges = plan_ranges(kafka.lag(group, topics.ARBITRAGE_ALERTS))
    else:  # the whole log again, under another group: a rerun from the start
        ranges = [
            PartitionRange(p, low, high)
            for p, (low, high) in kafka.watermarks(topics.ARBITRAGE_ALERTS).items()
        ]
    setup = StageSetup(
        NOTIFICATIONS,
        es,
        CONFIG,
        channels=chans,
        batch_size=batch_size,
        max_reject_ratio=max_reject_ratio,
    )
    runner = StageRunner(setup, kafka)
    return runner.run(group, ranges)


def deliveries(es: ElasticsearchClient, size: int = 1000) -> dict[str, dict]:
    client = es.client()
    client.indices.refresh(index=topics.DELIVERIES_INDEX)
    hits = client.search(index=topics.DELIVERIES_INDEX, size=size)["hits"]["hits"]
    return {hit["_id"]: hit["_source"] for hit in hits}


def committed_at_end(kafka: KafkaClient) -> None:
    for lag in kafka.lag(NOTIFICATIONS.live_group, topics.ARBITRAGE_ALERTS):
        assert lag.lag == 0, lag


@pytest.mark.usefixtures("clean_pipeline")
def test_each_opened_event_arrives_once_per_channel_signed_and_a_rerun_sends_nothing(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    alerts = [alert(n) for n in range(12)]
    # The lifecycle's shape too: an opened event with its own id, and an update (not wanted
    # by default), and a message that is no alert (→ DLQ).
    lifecycle = [
        alert(20, event="opened", event_id="ev-20-1", opportunity_id="op-20", version=1),
        alert(20, event="updated", event_id="ev-20-2", opportunity_id="op-20", version=2),
    ]
    publish(kafka, alerts + lifecycle, raw=[("B0NOTEBAD1", b'{"asin": "B0NOTEBAD1"}')])
    with webhook_receiver(SECRET) as every, webhook_receiver(SECRET) as rich:
        chans = channels(
            tmp_path,
            hook("every", every.url)
            + hook("rich", rich.url, "[channel.filter]\nmin_profit_eur_cents = 1000"),
            {SECRET_ENV: SECRET.decode()},
        )
        stats = run_stage(kafka, es, chans)
        opened = [a["alert_id"] for a in alerts] + ["ev-20-1"]
        assert sorted(every.keys()) == sorted(opened)
        assert set(every.keys().values()) == {1}  # raw requests: one per event
        assert all(r["signed"] for r in every.requests)
        profitable = [a["alert_id"] for a in alerts if a["profit_eur_cents"] >= 1000]
        assert sorted(rich.keys()) == sorted([*profitable, "ev-20-1"])
        body = json.loads(every.requests[0]["body"])
        assert body["event"] == "opened" and body["event_id"] == body["alert_id"]
        assert stats.counters["delivered:every"] == 13
        assert stats.counters["filtered:every"] == 1  # the update
        assert stats.counters["filtered:rich"] == 1 + 13 - len(profitable) - 1
        assert stats.to_dlq == 1
        docs = deliveries(es)
        assert docs["every:alert-0003"]["status"] == "delivered"
        assert docs["every:alert-0003"]["attempts"] == 1
        assert docs["every:ev-20-1"]["opportunity_id"] == "op-20"
        assert len(docs) == 13 + len(profitable) + 1
        committed_at_end(kafka)
        # The whole log again (another group): everything is skipped, nothing is sent.
        again = run_stage(kafka, es, chans, group=topics.tool_name("tests-notify-rerun"))
        assert len(every.requests) == 13
        assert again.counters["skipped:every"] == 13
        assert "delivered:every" not in again.counters
    dead = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)]
    assert [d["error"] for d in dead][:1] == ["the message has no alert_id"]


@pytest.mark.usefixtures("clean_pipeline")
def test_a_receiver_failing_twice_gets_each_event_exactly_once(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    publish(kafka, [alert(n) for n in range(4)])
    with webhook_receiver(SECRET, fail_first=2, retry_after="0") as receiver:
        chans = channels(tmp_path, hook("flaky", receiver.url), {SECRET_ENV: SECRET.decode()})
        stats = run_stage(kafka, es, chans)
    # Three raw requests per event, one answered 200: delivered once by Idempotency-Key.
    assert set(receiver.keys().values()) == {3}
    assert set(receiver.delivered_keys().values()) == {1}
    assert len(receiver.delivered_keys()) == 4
    assert stats.counters["delivered:flaky"] == 4
    assert {d["attempts"] for d in deliveries(es).values()} == {3}
    assert stats.to_dlq == 0
    committed_at_end(kafka)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_receiver_that_never_answers_costs_bounded_time_and_leaves_failed_and_dlq(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    """It accepts and sleeps past the timeout: each delivery gives up within max_total_s, and
    after three in a row the batch's other events fail at once (the breaker)."""
    publish(kafka, [alert(n, asin="B0NOTESAME") for n in range(5)])  # one partition
    with webhook_receiver(SECRET, hang_s=2.0) as receiver:
        text = hook("dead", receiver.url, "[channel.retry]\nmax_attempts = 2\nmax_total_s = 1.2")
        chans = channels(tmp_path, text, {SECRET_ENV: SECRET.decode()})
        started = time.monotonic()
        stats = run_stage(kafka, es, chans)
        took = time.monotonic() - started
    assert took < 3 * 1.2 + 5, took  # three bounded deliveries, the rest not tried
    assert stats.counters["failed:dead"] == 5
    docs = deliveries(es)
    assert {d["status"] for d in docs.values()} == {"failed"}
    assert sorted(d["attempts"] for d in docs.values()) == [0, 0, 2, 2, 2]
    assert "no answer within" in docs["dead:alert-0000"]["last_error"]
    assert "not tried" in docs["dead:alert-0004"]["last_error"]
    dead = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)]
    assert len(dead) == 5
    assert all(d["stage"] == "notifications" for d in dead)
    assert dead[0]["error"].startswith("channel dead (webhook): no answer within")
    assert json.loads(base64.b64decode(dead[0]["value"]))["alert_id"] == "alert-0000"
    committed_at_end(kafka)


@pytest.mark.usefixtures("clean_pipeline")
def test_an_email_arrives_once_with_a_message_id_fixed_by_the_event(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    publish(kafka, [alert(n) for n in range(3)])
    with mail_receiver() as mail:
        text = '[[channel]]\nname = "mail"\ntype = "email"\nurl_env = "TEST_MAIL_URL"\n'
        chans = channels(tmp_path, text, {"TEST_MAIL_URL": mail.url()})
        stats = run_stage(kafka, es, chans)
        run_stage(kafka, es, chans, group=topics.tool_name("tests-notify-rerun"))
        deadline = time.monotonic() + 5
        while len(mail.messages) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    assert stats.counters["delivered:mail"] == 3
    assert len(mail.messages) == 3
    ids = sorted(m["Message-ID"] for m in mail.messages)
    assert ids == sorted(email_message_id(f"alert-{n:04d}", "example.com") for n in range(3))
    assert mail.messages[0]["To"] == "buyer@example.com"
    assert mail.messages[0]["Subject"].startswith("[opened] B0NOTE")


@pytest.mark.usefixtures("clean_pipeline")
def test_the_job_with_the_default_file_delivers_to_nobody_and_commits(
    kafka: KafkaClient,
) -> None:
    publish(kafka, [alert(n) for n in range(3)])
    result = run_job("notifications")
    assert result.success
    committed_at_end(kafka)
    graph = SAMPLE_DEFS.resolve_asset_graph()
    for key in (("elasticsearch", "alert_deliveries"), ("kafka", "arbitrage_alerts_dlq")):
        parents = graph.get(dg.AssetKey(list(key))).parent_keys
        assert [p.to_user_string() for p in parents] == ["kafka/arbitrage_alerts"]


@pytest.mark.usefixtures("clean_pipeline")
def test_an_apprise_channel_delivers_and_its_errors_never_show_the_url_token(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    """apprise's json:// service against the local HTTP server: a chat service stand-in whose
    URL carries a token in its path, as Slack's and Telegram's do."""
    token = "T0KENs3cr3tValue42"
    publish(kafka, [alert(n) for n in range(2)])
    text = '[[channel]]\nname = "chat"\ntype = "apprise"\nurl_env = "TEST_CHAT_URL"\n'
    with webhook_receiver(SECRET) as good, webhook_receiver(SECRET, fail_first=99) as broken:
        chans = channels(
            tmp_path, text, {"TEST_CHAT_URL": f"json://127.0.0.1:{good.port}/hook/{token}"}
        )
        stats = run_stage(kafka, es, chans)
        assert stats.counters["delivered:chat"] == 2
        assert len(good.requests) == 2
        assert json.loads(good.requests[0]["body"])["title"].startswith("[opened] B0NOTE")
        publish(kafka, [alert(n) for n in range(2, 4)])
        chans = channels(
            tmp_path, text, {"TEST_CHAT_URL": f"json://127.0.0.1:{broken.port}/hook/{token}"}
        )
        stats = run_stage(kafka, es, chans)
    assert stats.counters["failed:chat"] == 2
    failed = [d for d in deliveries(es).values() if d["status"] == "failed"]
    assert len(failed) == 2 and all(d["last_error"] for d in failed)
    dead = read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)
    shown = json.dumps(failed) + "".join(json.dumps(m.json()["error"]) for m in dead)
    assert token not in shown, shown


@pytest.mark.usefixtures("clean_pipeline")
def test_the_job_reports_counts_per_channel_on_the_deliveries_index(
    kafka: KafkaClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(kafka, [alert(n) for n in range(3)] + [alert(9, event="closed", event_id="c9")])
    with webhook_receiver(SECRET) as receiver:
        path = tmp_path / "notifications.toml"
        path.write_text(FAST_RETRY + hook("hook", receiver.url))
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())  # read when the run starts
        monkeypatch.setenv("ARBITRAGE_NOTIFICATIONS_FILE", str(path))
        defs = build_definitions(replace(Settings.from_env(), keepa_source="sample"))
        result = defs.resolve_job_def("notifications").execute_in_process(
            instance=dg.DagsterInstance.ephemeral()
        )
    assert result.success
    assert len(receiver.requests) == 3
    materializations = [
        m
        for m in result.asset_materializations_for_node("notifications_stage")
        if m.asset_key == dg.AssetKey(["elasticsearch", "alert_deliveries"])
    ]
    metadata = materializations[-1].metadata
    assert metadata["delivered:hook"].value == 3
    assert metadata["filtered:hook"].value == 1  # the closed event
    assert "records_in" in metadata


@pytest.mark.usefixtures("clean_pipeline")
def test_the_sensor_requests_a_following_run_per_lagging_partition_of_the_alerts(
    kafka: KafkaClient,
) -> None:
    publish(kafka, [alert(n) for n in range(12)])
    lagging = {
        lag.partition: lag.lag
        for lag in kafka.lag(NOTIFICATIONS.live_group, topics.ARBITRAGE_ALERTS)
        if lag.lag
    }
    sensor = SAMPLE_DEFS.resolve_sensor_def("notifications_sensor")
    with temp_instance() as instance:
        result = tick(sensor, instance, kafka)
    requested = ranges(result, op="notifications_stage")
    assert {p: end - start for p, (start, end) in requested.items()} == lagging
    for request in result.run_requests or []:
        assert request.run_config["ops"]["notifications_stage"]["config"]["follow"] is True
        assert request.tags[STAGE_TAG] == "notifications"
        assert request.tags[PARTITION_TAG].startswith(topics.ARBITRAGE_ALERTS)


@pytest.mark.usefixtures("clean_pipeline")
def test_hostile_alerts_are_dead_lettered_before_any_delivery_and_never_stall(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    """One hostile record of each kind among good ones, to a webhook and an e-mail channel (the
    e-mail library refuses line breaks in headers: before, the run failed on the first one and
    every rerun the same way)."""
    rng = random.Random(24)
    good = [alert(n) for n in range(6)]
    hostile = [hostile_alert(n, rng) for n in range(2 * HOSTILE_KINDS)]
    publish(kafka, good, raw=[(key, value) for key, value, _ in hostile])
    text = hook("hook", "URL") + '[[channel]]\nname = "mail"\ntype = "email"\nurl_env = "MAIL"\n'
    with webhook_receiver(SECRET) as receiver, mail_receiver() as mail:
        env = {SECRET_ENV: SECRET.decode(), "MAIL": mail.url()}
        chans = channels(tmp_path, text.replace("URL", receiver.url), env)
        stats = run_stage(kafka, es, chans, max_reject_ratio=0.9)
        wait_for_mail(mail, len(good))
    wanted = sorted(a["alert_id"] for a in good)
    assert sorted(receiver.keys()) == wanted  # the good ones, each once; no hostile one
    assert sorted(m[IDEMPOTENCY_HEADER] for m in mail.messages) == wanted
    assert stats.counters["delivered:hook"] == stats.counters["delivered:mail"] == len(good)
    dead = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)]
    assert len(dead) == len(hostile)
    sources = {base64.b64decode(d["value"]): d["error"] for d in dead}
    for _, value, why in hostile:
        assert sources.get(value), f"{why}: not dead-lettered"
    assert {d["stage"] for d in dead} == {"notifications"}
    assert set(deliveries(es)) == {f"{c}:{a}" for c in ("hook", "mail") for a in wanted}
    committed_at_end(kafka)


def wait_for_mail(mail: MailReceiver, count: int) -> None:
    deadline = time.monotonic() + 5
    while len(mail.messages) < count and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.usefixtures("clean_pipeline")
def test_a_refused_delivery_record_dead_letters_the_event_and_the_offset_moves(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    """The delivery is sent, then its record refused (here: an index whose `asin` is a number).
    Before, the run failed after the send, so every rerun sent it again."""
    client = es.client()
    client.options(ignore_status=404).indices.delete(index=topics.DELIVERIES_INDEX)
    client.indices.create(
        index=topics.DELIVERIES_INDEX, mappings={"properties": {"asin": {"type": "long"}}}
    )
    publish(kafka, [alert(1)])
    with webhook_receiver(SECRET) as receiver:
        chans = channels(tmp_path, hook("hook", receiver.url), {SECRET_ENV: SECRET.decode()})
        stats = run_stage(kafka, es, chans)
        run_stage(kafka, es, chans)  # the rerun: nothing left to do
    assert receiver.keys() == {"alert-0001": 1}
    assert stats.counters["delivered:hook"] == 1
    (dead,) = [m.json() for m in read_all(kafka, topics.ARBITRAGE_ALERTS_DLQ)]
    assert dead["error"].startswith(
        "channel hook (webhook): delivered, but its delivery record was refused:"
    ), dead["error"]
    committed_at_end(kafka)


@pytest.mark.usefixtures("clean_pipeline")
def test_chat_messages_carry_no_mention_link_or_tag_from_the_title(
    kafka: KafkaClient, es: ElasticsearchClient, tmp_path: Path
) -> None:
    title = (
        "@everyone <@123456789> <!channel> [Refund here](https://evil.example/x) "
        "![x](https://evil.example/p.png) <a href='https://evil.example'>Deal</a>\nline two"
    )
    publish(kafka, [alert(1, title=title)])
    text = '[[channel]]\nname = "chat"\ntype = "apprise"\nurl_env = "TEST_CHAT_URL"\n'
    with webhook_receiver(SECRET) as chat:
        chans = channels(tmp_path, text, {"TEST_CHAT_URL": f"json://127.0.0.1:{chat.port}/hook"})
        stats = run_stage(kafka, es, chans)
    assert stats.counters["delivered:chat"] == 1
    sent = json.loads(chat.requests[0]["body"])
    assert sent["title"].startswith("[opened] B0NOTE0001")  # our own brackets stay
    for markup in ("@", "<", ">", "[", "]"):
        assert markup not in sent["message"], (markup, sent["message"])
    first_line = sent["message"].splitlines()[0]
    assert first_line.startswith("＠everyone ‹＠123456789› ‹!channel› ［Refund here］(https")
    assert first_line.endswith("line two")  # the title's line break is a space
