"""The daily digest through Dagster against the real Elasticsearch, sent to real receivers
started here: an HTTP server (the webhook, and apprise's json:// service) and an SMTP server."""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from arbitrage.cli.main import main as cli_main
from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.domain import topics
from arbitrage.domain.digest import digest_idempotency_key, digest_message_id
from arbitrage.settings import Settings
from assets.keys import DIGEST_KEY
from pipelines.definitions import build_definitions
from tests.integration.test_notifications import FAST_RETRY, SECRET, SECRET_ENV, deliveries
from tests.notify_receivers import mail_receiver, webhook_receiver

pytestmark = pytest.mark.integration

DAY = date(2026, 11, 20)
MAIL_ENV = "TEST_DIGEST_MAIL_URL"
CHAT_ENV = "TEST_DIGEST_CHAT_URL"


def opportunity(n: int, profit: int, **fields: object) -> dict:
    """An opportunity state shaped like the arbitrage stage's (arbitrage/domain/lifecycle.py)."""
    asin = f"B0DIGEST{n:02d}"
    opportunity_id = f"{asin}-DE-FR-fees_v1-rules_v1"
    return {
        "schema_version": 2,
        "opportunity_id": opportunity_id,
        "alert_id": f"{opportunity_id}-e1",
        "event": "opened",
        "event_id": f"{opportunity_id}-v1",
        "status": "open",
        "episode": 1,
        "version": 1,
        "asin": asin,
        "title": f"Digest thing {n}",
        "buy_market": "DE",
        "sell_market": "FR",
        "buy_price": {"amount": 4500, "currency": "EUR"},
        "sell_price": {"amount": 9000, "currency": "EUR"},
        "profit_eur_cents": profit,
        "roi": 0.3,
        "opened_at": "2026-11-20T08:00:00.000Z",
        "detected_at": "2026-11-20T09:00:00.000Z",
        **fields,
    }


def index_states(es: ElasticsearchClient) -> None:
    day_ms = int(datetime(2026, 11, 20, 12, tzinfo=UTC).timestamp() * 1000)
    states = [
        opportunity(1, 1500),
        opportunity(2, 4200),
        opportunity(3, 800),
        # Opened the day before, updated in the day: in.
        opportunity(4, 2500, opened_at="2026-11-19T22:00:00.000Z", event="updated"),
        # Another day: out.
        opportunity(
            5, 9900, opened_at="2026-11-18T10:00:00.000Z", detected_at="2026-11-19T10:00:00.000Z"
        ),
        # Closed in the day: counted, not listed.
        opportunity(
            6,
            7000,
            status="closed",
            event="closed",
            close_reason="stale",
            closed_at_source_ms=day_ms,
        ),
    ]
    outcome = es.bulk_write(
        [BulkOp("index", topics.ALERTS_INDEX, s["opportunity_id"], s) for s in states]
    )
    assert not outcome.rejected, outcome.rejected
    es.refresh(topics.ALERTS_INDEX)


def channels_file(tmp_path: Path, hook_url: str) -> Path:
    path = tmp_path / "notifications.toml"
    path.write_text(
        FAST_RETRY + f'[[channel]]\nname = "hook"\ntype = "webhook"\nurl = "{hook_url}"\n'
        f'secret_env = "{SECRET_ENV}"\n'
        + f'[[channel]]\nname = "mail"\ntype = "email"\nurl_env = "{MAIL_ENV}"\n'
        + f'[[channel]]\nname = "chat"\ntype = "apprise"\nurl_env = "{CHAT_ENV}"\n'
        # Events only: never gets the digest.
        + f'[[channel]]\nname = "quiet"\ntype = "webhook"\nurl = "{hook_url}"\n'
        f'secret_env = "{SECRET_ENV}"\ndigest = false\n'
    )
    return path


def run_digest(path: Path, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    # The channels file comes from the environment only (resources/run_config.py).
    with pytest.MonkeyPatch.context() as env:
        env.setenv("ARBITRAGE_NOTIFICATIONS_FILE", str(path))
        return _run_digest(instance)


def _run_digest(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = build_definitions(Settings.from_env())
    return defs.resolve_job_def("daily_digest").execute_in_process(
        partition_key=DAY.isoformat(), instance=instance, raise_on_error=False
    )


def wait_for(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.mark.usefixtures("clean_pipeline")
def test_the_digest_job_sends_once_per_channel_with_the_chart_and_a_rerun_sends_nothing(
    es: ElasticsearchClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_states(es)
    home = tmp_path / "dagster_home"
    home.mkdir()
    with (
        webhook_receiver(SECRET) as hook,
        webhook_receiver(SECRET) as chat,
        mail_receiver() as mail,
        dg.instance_for_test(temp_dir=str(home)) as instance,
    ):
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())  # read when the run starts
        monkeypatch.setenv(MAIL_ENV, mail.url())
        monkeypatch.setenv(CHAT_ENV, f"json://127.0.0.1:{chat.port}/hook")
        path = channels_file(tmp_path, hook.url)
        result = run_digest(path, instance)
        assert result.success
        wait_for(lambda: len(mail.messages) >= 1)

        # The webhook: one signed POST keyed digest:<day>:hook with the rows and the chart.
        assert len(hook.requests) == 1
        request = hook.requests[0]
        assert request["signed"]
        assert request["key"] == digest_idempotency_key(DAY, "hook")
        body = json.loads(request["body"])
        assert [r["asin"] for r in body["rows"]] == [
            "B0DIGEST02",
            "B0DIGEST04",
            "B0DIGEST01",
            "B0DIGEST03",
        ]
        # Opened in the day: 1, 2, 3 and the one closed since; closed in the day: that one.
        assert (body["opened"], body["closed"]) == (4, 1)
        png = base64.b64decode(body["chart_png_base64"])
        assert Image.open(io.BytesIO(png)).format == "PNG"

        # The e-mail: once, the HTML table and the chart attached, Message-ID from the key.
        assert len(mail.messages) == 1
        message = mail.messages[0]
        assert message["Message-ID"] == digest_message_id(
            digest_idempotency_key(DAY, "mail"), "example.com"
        )
        parts = {part.get_content_type(): part for part in message.walk()}
        assert "B0DIGEST02" in parts["text/html"].get_payload(decode=True).decode()
        assert parts["image/png"].get_payload(decode=True) == png
        assert parts["image/png"].get_filename() == "digest-2026-11-20.png"

        # apprise (json://): the text and the chart as an attachment.
        assert len(chat.requests) == 1
        chat_body = json.loads(chat.requests[0]["body"])
        assert "B0DIGEST02" in chat_body["message"]
        assert len(chat_body["attachments"]) == 1

        # The run's metadata: the count, per-channel status, the image inline and as a file.
        materialization = result.asset_materializations_for_node("notifications__daily_digest")[0]
        assert materialization.asset_key == DIGEST_KEY
        metadata = materialization.metadata
        assert metadata["opportunities"].value == 4
        assert metadata["channels"].value == {
            "hook": "delivered",
            "mail": "delivered",
            "chat": "delivered",
        }
        assert metadata["opted_out"].value == ["quiet"]
        inline = metadata["chart"].value
        assert inline.startswith("![digest 2026-11-20](data:image/png;base64,")
        assert base64.b64decode(inline.split(",", 1)[1].rstrip(")")) == png
        chart_path = Path(metadata["chart_path"].value)
        assert chart_path == home / "storage" / "digests" / "2026-11-20.png"
        assert chart_path.read_bytes() == png

        docs = deliveries(es)
        for channel in ("hook", "mail", "chat"):
            doc = docs[f"{channel}:digest:2026-11-20"]
            assert doc["status"] == "delivered" and doc["event"] == "digest"
        assert "quiet:digest:2026-11-20" not in docs

        # The same day again: every channel already has it, nothing is sent.
        again = run_digest(path, instance)
        assert again.success
        time.sleep(0.5)
        assert len(hook.requests) == 1 and len(chat.requests) == 1
        assert len(mail.messages) == 1
        metadata = again.asset_materializations_for_node("notifications__daily_digest")[0].metadata
        assert set(metadata["channels"].value.values()) == {"skipped"}


@pytest.mark.usefixtures("clean_pipeline")
def test_a_failing_channel_fails_the_run_and_only_it_is_retried(
    es: ElasticsearchClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index_states(es)
    with (
        webhook_receiver(SECRET, fail_first=99, fail_status=503) as broken,
        webhook_receiver(SECRET) as good,
        dg.instance_for_test(temp_dir=str(tmp_path)) as instance,
    ):
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())
        path = tmp_path / "notifications.toml"
        hooks = [("good", good.url), ("broken", broken.url)]
        path.write_text(
            FAST_RETRY
            + "".join(
                f'[[channel]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n'
                f'secret_env = "{SECRET_ENV}"\n'
                for name, url in hooks
            )
        )
        first = run_digest(path, instance)
        assert not first.success
        assert len(good.requests) == 1
        docs = deliveries(es)
        assert docs["broken:digest:2026-11-20"]["status"] == "failed"
        assert "HTTP 503" in docs["broken:digest:2026-11-20"]["last_error"]
        sent_to_broken = len(broken.requests)
        broken.fail_first = 0
        second = run_digest(path, instance)
        assert second.success
        assert len(good.requests) == 1  # delivered before: skipped
        assert len(broken.requests) == sent_to_broken + 1
        assert deliveries(es)["broken:digest:2026-11-20"]["status"] == "delivered"


@pytest.mark.usefixtures("clean_pipeline")
def test_the_cli_prints_a_dry_run_and_sends_nothing(
    es: ElasticsearchClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    index_states(es)
    out = tmp_path / "chart.png"
    assert cli_main(["digest", "--day", "2026-11-20", "--dry-run", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == "Arbitrage digest 2026-11-20: 4 open opportunities"
    assert printed.index("B0DIGEST02") < printed.index("B0DIGEST04")
    assert f"chart: {out}" in printed and "dry run: not sent" in printed
    assert Image.open(out).format == "PNG"
    assert not [d for d in deliveries(es) if ":digest:" in d]
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["digest", "--day", "20-11-2026"])
    assert exit_info.value.code == 2
    assert "is not a date as YYYY-MM-DD" in capsys.readouterr().err


@pytest.mark.usefixtures("clean_pipeline")
def test_the_cli_sends_once_like_the_job(
    es: ElasticsearchClient,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index_states(es)
    with webhook_receiver(SECRET) as hook:
        path = tmp_path / "notifications.toml"
        path.write_text(
            FAST_RETRY + f'[[channel]]\nname = "hook"\ntype = "webhook"\nurl = "{hook.url}"\n'
            f'secret_env = "{SECRET_ENV}"\n'
        )
        monkeypatch.setenv("ARBITRAGE_NOTIFICATIONS_FILE", str(path))
        argv = ["digest", "--day", "2026-11-20", "--out", str(tmp_path / "c.png")]
        monkeypatch.delenv(SECRET_ENV, raising=False)
        assert cli_main(argv) == 2  # the secret's variable is not set: said before anything
        assert f"reads {SECRET_ENV}, which is not set" in capsys.readouterr().err
        monkeypatch.setenv(SECRET_ENV, SECRET.decode())
        assert cli_main(argv) == 0
        assert "hook (webhook): delivered" in capsys.readouterr().out
        assert cli_main(argv) == 0
        assert "hook (webhook): skipped" in capsys.readouterr().out
    assert len(hook.requests) == 1 and hook.requests[0]["signed"]
