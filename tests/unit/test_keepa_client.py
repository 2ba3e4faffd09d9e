"""The Keepa source (resources.keepa) against a local Keepa stand-in (tests.keepa_server)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from arbitrage.clients.keepa_pull import PullProgress, pull_products
from arbitrage.clients.keepa_sources import (
    REFILL_MARGIN_S,
    KeepaError,
    KeepaHttpClient,
    KeepaSampleSource,
    redact_key,
)
from arbitrage.domain.markets import DEFAULT_MARKETS, MARKETPLACES
from arbitrage.domain.messages.validation import validate_raw_update
from tests.keepa_server import (
    KeepaTestServer,
    json_response,
    not_json,
    payment_required,
    redirect,
    refused,
    server_error,
    slow,
    tokens_exhausted,
)
from tools.sample_generator import (
    build_sample_document,
    encode_sample_document,
    generate_sample,
)

API_KEY = "s3cr3t-keepa-key-0123456789abcdef"
PULLED_AT = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
LOGGER = logging.getLogger("tests.keepa")


@pytest.fixture(scope="module")
def sample_document() -> dict[str, Any]:
    return build_sample_document(250, seed=42)


@pytest.fixture
def server(sample_document: dict[str, Any]) -> Iterator[KeepaTestServer]:
    with KeepaTestServer(bodies=sample_document["markets"]) as running:
        yield running


@pytest.fixture
def sleeps() -> list[float]:
    return []


def make_client(server: KeepaTestServer, sleeps: list[float], **options: Any) -> KeepaHttpClient:
    return KeepaHttpClient(
        API_KEY,
        base_url=server.url,
        sleep=sleeps.append,
        logger=LOGGER,
        timeout_s=options.pop("timeout_s", 5.0),
        **options,
    )


def first_asins(document: dict[str, Any], count: int) -> list[str]:
    return document["asins"][:count]


# --------------------------------------------------------------------------- requests


def test_250_asins_take_three_requests_per_market(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    client = make_client(server, sleeps)
    result = pull_products(client, sample_document["asins"], DEFAULT_MARKETS, PULLED_AT, LOGGER)
    requests = server.requests
    assert len(requests) == result.requests_made == 3 * len(DEFAULT_MARKETS)
    for market in DEFAULT_MARKETS:
        domain = str(MARKETPLACES[market].keepa_domain_id)
        mine = [r for r in requests if r.params["domain"] == domain]
        assert [len(r.asins) for r in mine] == [100, 100, 50]
        assert [a for r in mine for a in r.asins] == sample_document["asins"]
    for request in requests:
        assert request.path == "/product"
        assert request.params["key"] == API_KEY
        assert (request.params["stats"], request.params["history"], request.params["buybox"]) == (
            "90",
            "0",
            "1",
        )
    assert len(result.updates) == 250 and result.not_found == []
    assert result.tokens_consumed == 3 * 250 * len(DEFAULT_MARKETS)
    assert result.tokens_left is not None
    assert sleeps == []
    for update in result.updates:
        assert update["source"] == "keepa"
        assert validate_raw_update(update) == update


def test_counts_per_market_and_not_found(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    asins = [*first_asins(sample_document, 30), "B0NOTKNOWN", "b0notknown"]
    result = pull_products(make_client(server, sleeps), asins, ("DE", "GB"), PULLED_AT, LOGGER)
    assert result.not_found == ["B0NOTKNOWN"]
    assert result.asins_requested == 31
    expected = {
        market: sum(
            1
            for p in sample_document["markets"][market]["products"]
            if p["asin"] in asins[:30] and p["title"] is not None
        )
        for market in ("DE", "GB")
    }
    assert result.per_market_received == expected
    assert {u["asin"] for u in result.updates} <= set(asins[:30])


def test_progress_is_reported_per_batch(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    seen: list[PullProgress] = []
    client = make_client(server, sleeps, batch_size=40)
    pull_products(
        client,
        first_asins(sample_document, 100),
        ("DE", "FR"),
        PULLED_AT,
        LOGGER,
        progress=seen.append,
    )
    assert [p.requests_made for p in seen] == list(range(1, 7))
    assert [p.lookups_done for p in seen] == [40, 80, 120, 160, 180, 200]
    assert [p.asins_done for p in seen] == [0, 40, 40, 80, 80, 100]
    assert {p.asins_total for p in seen} == {100} and {p.lookups_total for p in seen} == {200}
    assert all(p.tokens_left is not None for p in seen)


# --------------------------------------------------------------------------- token budget


def test_429_waits_for_refill_then_succeeds(
    server: KeepaTestServer,
    sleeps: list[float],
    sample_document: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server.script([tokens_exhausted(refill_in_ms=1500)])
    batch = make_client(server, sleeps).fetch_batch("DE", first_asins(sample_document, 5))
    assert sleeps == [pytest.approx(1.5 + REFILL_MARGIN_S)]
    assert [r.status for r in server.requests] == [429, 200]
    assert batch.products
    assert "out of tokens" in caplog.text and "waiting 1.6 s" in caplog.text


def test_429_longer_than_max_wait_fails_clearly(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([tokens_exhausted(refill_in_ms=240_000)])
    client = make_client(server, sleeps, max_wait_s=60)
    with pytest.raises(KeepaError, match=r"out of tokens.*240 s.*max_wait_s=60"):
        client.fetch_batch("DE", first_asins(sample_document, 5))
    assert sleeps == []


def test_too_many_token_waits_give_up(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([tokens_exhausted(refill_in_ms=100)] * 4)
    client = make_client(server, sleeps, max_token_waits=3)
    with pytest.raises(KeepaError, match="after 3 waits"):
        client.fetch_batch("DE", first_asins(sample_document, 5))
    assert len(sleeps) == 3


# --------------------------------------------------------------------------- retries


def test_500_is_retried_with_backoff(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([server_error(500), server_error(503)])
    client = make_client(server, sleeps, backoff_base_s=0.5, backoff_cap_s=10)
    batch = client.fetch_batch("FR", first_asins(sample_document, 5))
    assert sleeps == [0.5, 1.0]
    assert [r.status for r in server.requests] == [500, 503, 200]
    assert batch.products


def test_backoff_is_capped_and_attempts_are_bounded(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([server_error(502)] * 6)
    client = make_client(server, sleeps, retries=4, backoff_base_s=1, backoff_cap_s=3)
    with pytest.raises(KeepaError, match=r"after 5 attempts; last problem: HTTP 502"):
        client.fetch_batch("IT", first_asins(sample_document, 5))
    assert sleeps == [1, 2, 3, 3]
    assert len(server.requests) == 5


def test_timeouts_are_retried(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([slow(1.0)])
    client = make_client(server, sleeps, timeout_s=0.2, backoff_base_s=0.25)
    batch = client.fetch_batch("ES", first_asins(sample_document, 3))
    assert sleeps == [0.25]
    assert batch.products


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_connection_errors_are_retried_then_reported(sleeps: list[float]) -> None:
    client = KeepaHttpClient(
        API_KEY,
        base_url=f"http://127.0.0.1:{unused_port()}",
        sleep=sleeps.append,
        retries=2,
        timeout_s=2,
    )
    problem = "after 3 attempts; last problem: connection failed"
    with pytest.raises(KeepaError, match=problem) as exc:
        client.fetch_batch("DE", ["B0TEST0001"])
    assert sleeps == [1.0, 2.0]
    assert API_KEY not in str(exc.value)
    # Raised outside the except block: no chained exception carries the URL along.
    assert exc.value.__cause__ is None and exc.value.__context__ is None


# --------------------------------------------------------------------------- refusals


def test_402_raises_without_retry(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([payment_required()])
    with pytest.raises(KeepaError) as exc:
        make_client(server, sleeps).fetch_batch("DE", first_asins(sample_document, 5))
    assert str(exc.value).startswith(
        "Keepa refused the request (HTTP 402: payment required — the key has no active "
        "subscription or ran out of tokens)"
    )
    assert "No active subscription." in str(exc.value)
    assert len(server.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    ("status", "words"),
    [(400, "bad request"), (401, "not valid"), (404, "no such endpoint"), (418, "HTTP 418")],
)
def test_other_4xx_raise(
    server: KeepaTestServer,
    sleeps: list[float],
    sample_document: dict[str, Any],
    status: int,
    words: str,
) -> None:
    server.script([refused(status, "nope")])
    with pytest.raises(KeepaError, match=f"HTTP {status}") as exc:
        make_client(server, sleeps).fetch_batch("DE", first_asins(sample_document, 5))
    assert words in str(exc.value)
    assert len(server.requests) == 1


def test_non_json_body_raises(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    page = "<html><body>" + "x" * 200 + "</body></html>"
    server.script([not_json(page)])
    with pytest.raises(KeepaError) as exc:
        make_client(server, sleeps).fetch_batch("DE", first_asins(sample_document, 5))
    assert str(exc.value) == (
        f"Keepa answered HTTP 200 with a body that is not JSON: {page[:80]!r}"
    )


def test_error_object_in_a_200_body_raises(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    server.script([json_response(200, {"error": {"type": "INVALID", "message": "bad asin"}})])
    with pytest.raises(KeepaError, match=r"Keepa reported an error.*INVALID: bad asin"):
        make_client(server, sleeps).fetch_batch("DE", first_asins(sample_document, 5))


# --------------------------------------------------------------------------- the key stays secret


@pytest.mark.parametrize(
    "answer",
    [
        payment_required(),
        refused(400, f"bad key {API_KEY}"),
        not_json(f"echo key={API_KEY}&domain=3"),
        json_response(200, {"error": {"type": "X", "message": f"key={API_KEY}"}}),
    ],
    ids=["402", "400-echoing-key", "non-json-echoing-key", "error-echoing-key"],
)
def test_key_never_appears_in_errors_or_logs(
    server: KeepaTestServer,
    sleeps: list[float],
    sample_document: dict[str, Any],
    caplog: pytest.LogCaptureFixture,
    answer: Any,
) -> None:
    caplog.set_level(logging.DEBUG)  # includes urllib3's request lines, which show the URL
    server.script([tokens_exhausted(500), server_error(500), answer])
    client = make_client(server, sleeps)
    with pytest.raises(KeepaError) as exc:
        client.fetch_batch("DE", first_asins(sample_document, 5))
    assert len(server.requests) == 3
    assert API_KEY not in str(exc.value)
    assert API_KEY not in repr(exc.value)
    assert API_KEY not in caplog.text
    assert "/product" in caplog.text  # urllib3 did log the requests, redacted
    assert API_KEY not in repr(client)
    assert "api_key='***'" in repr(client)


def test_redact_key() -> None:
    url = f"https://api.keepa.com/product?key={API_KEY}&domain=3"
    assert redact_key(url) == "https://api.keepa.com/product?key=***&domain=3"
    assert redact_key(f"the key {API_KEY} leaked", API_KEY) == "the key *** leaked"


def test_constructor_checks() -> None:
    with pytest.raises(ValueError, match="API key is empty"):
        KeepaHttpClient("  ")
    with pytest.raises(ValueError, match="batch_size"):
        KeepaHttpClient(API_KEY, batch_size=101)
    client = KeepaHttpClient(API_KEY)
    with pytest.raises(ValueError, match="unknown marketplace"):
        client.fetch_batch("US", ["B0TEST0001"])
    with pytest.raises(ValueError, match="not ASINs"):
        client.fetch_batch("DE", ["B00X"])
    with pytest.raises(ValueError, match="1 to 100"):
        client.fetch_batch("DE", [f"B0TEST{i:04d}" for i in range(101)])


# --------------------------------------------------------------------------- sample source


@pytest.fixture
def sample_file(tmp_path: Path, sample_document: dict[str, Any]) -> Path:
    path = tmp_path / "keepa_sample.json.gz"
    path.write_bytes(encode_sample_document(sample_document))
    return path


def test_sample_source_matches_the_http_client(
    server: KeepaTestServer,
    sleeps: list[float],
    sample_document: dict[str, Any],
    sample_file: Path,
) -> None:
    asins = [*sample_document["asins"], "B0NOTKNOWN"]
    live = pull_products(make_client(server, sleeps), asins, DEFAULT_MARKETS, PULLED_AT, LOGGER)
    sample = pull_products(
        KeepaSampleSource(sample_file), asins, DEFAULT_MARKETS, PULLED_AT, LOGGER
    )
    assert [u["source"] for u in sample.updates] == ["sample"] * 250
    assert [{**u, "source": "keepa"} for u in sample.updates] == live.updates
    assert sample.per_market_received == live.per_market_received
    assert sample.not_found == live.not_found == ["B0NOTKNOWN"]
    assert sample.requests_made == live.requests_made
    assert (sample.tokens_consumed, sample.tokens_left) == (0, None)


def test_sample_source_batches_like_the_api(
    server: KeepaTestServer,
    sleeps: list[float],
    sample_document: dict[str, Any],
    sample_file: Path,
) -> None:
    source = KeepaSampleSource(sample_file)
    client = make_client(server, sleeps)
    asins = first_asins(sample_document, 60)
    for market in DEFAULT_MARKETS:
        from_file = source.fetch_batch(market, asins)
        from_http = client.fetch_batch(market, asins)
        assert from_file.products == from_http.products
        assert from_file.not_found == from_http.not_found
        assert from_file.tokens.tokens_consumed == 0
    assert source.asins() == sample_document["asins"]


def test_sample_source_without_file(tmp_path: Path) -> None:
    source = KeepaSampleSource(tmp_path / "missing.json.gz")
    with pytest.raises(KeepaError, match=r"does not exist.*sample_generator"):
        source.fetch_batch("DE", ["B0TEST0001"])


def test_bundled_sample_pulls_cleanly() -> None:
    source = KeepaSampleSource()
    result = pull_products(source, source.asins(), DEFAULT_MARKETS, PULLED_AT, LOGGER)
    assert len(result.updates) == 500 and result.not_found == []
    assert result.requests_made == 5 * len(DEFAULT_MARKETS)


def test_server_serves_generated_products_directly(sleeps: list[float]) -> None:
    bodies = generate_sample(5, seed=1)
    with KeepaTestServer({"DE": bodies["DE"]["products"]}) as server:
        asins = [p["asin"] for p in bodies["DE"]["products"]]
        batch = make_client(server, sleeps).fetch_batch("DE", asins)
        assert set(batch.products) <= set(asins)
        assert batch.not_found == [a for a in asins if a not in batch.products]


def test_a_redirect_is_not_followed_with_the_key(
    server: KeepaTestServer, sleeps: list[float], sample_document: dict[str, Any]
) -> None:
    """A 3xx would carry ``key=`` in the query to wherever it points: refused, not followed."""
    with KeepaTestServer(bodies=sample_document["markets"]) as elsewhere:
        server.script([redirect(f"{elsewhere.url}/product?collect=1")])
        client = make_client(server, sleeps)
        with pytest.raises(KeepaError, match="HTTP 302, a redirect; it is not followed") as caught:
            pull_products(client, first_asins(sample_document, 3), ("DE",), PULLED_AT, LOGGER)
        assert elsewhere.requests == []
    assert API_KEY not in str(caught.value)
    assert len(server.requests) == 1
