"""The Keepa market simulator as a real HTTP server: the project's own Keepa client pulls from
it and parses what it answers; the token arithmetic is Keepa's documented one; Finder, Deals and
Best Sellers page and cost as documented; the market moves with simulated time."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import requests

from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.keepa_parsing import merge_market_products, product_token_cost
from arbitrage.domain.rules_config import load_rules_config
from devservices.keepa_sim import truth
from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.market import state_at
from devservices.keepa_sim.server import SimulatorServer
from devservices.keepa_sim.tokens import MINUTE_MS
from tests.keepa_simulator import KEY, START_MS, ManualTime, serve

FEES = load_fee_config()
SEED = 424242


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.generate(SEED, 20_000)


@pytest.fixture
def sim(catalog: Catalog) -> Iterator[tuple[SimulatorServer, ManualTime]]:
    server, time_source = serve(catalog)
    yield server, time_source
    server.shutdown()
    server.server_close()


def get(server: SimulatorServer, path: str, **params: str) -> requests.Response:
    return requests.get(server.url + path, params={"key": KEY, **params}, timeout=10)


def test_the_catalog_names_its_asins_both_ways(catalog: Catalog) -> None:
    asins = catalog.asins(np.arange(catalog.size))
    assert len(set(asins)) == catalog.size
    assert all(len(a) == 10 and a.startswith("B0") for a in asins[:100])
    assert [catalog.index(a) for a in asins[:1000]] == list(range(1000))
    assert catalog.index("B0ZZZZZZZZ") is None or catalog.index("B0ZZZZZZZZ") < catalog.size
    again = Catalog.generate(SEED, 20_000)
    assert np.array_equal(again.base_eur_cents, catalog.base_eur_cents)


def test_the_pipeline_client_pulls_and_parses_the_simulated_products(
    sim: tuple[SimulatorServer, ManualTime], catalog: Catalog
) -> None:
    server, clock = sim
    waits: list[float] = []

    def sleep(seconds: float) -> None:  # the client honours refillIn; time moves by it
        waits.append(seconds)
        clock.now += seconds

    client = KeepaHttpClient(KEY, base_url=server.url, sleep=sleep)
    asins = catalog.asins(range(100))
    batches = {market: client.fetch_batch(market, asins) for market in ("DE", "FR", "GB")}
    pulled_at = datetime.now(UTC)
    enriched = []
    for asin in asins:
        per_market = {m: b.products[asin] for m, b in batches.items() if asin in b.products}
        if per_market:
            raw = merge_market_products(asin, per_market, pulled_at, "keepa", ("DE", "FR", "GB"))
            enriched.append(enrich(raw, FEES))
    # A few products are listed in none of the three markets; the rest enrich as Keepa's do.
    assert len(enriched) >= 95
    assert all(p["markets"] for p in enriched)
    cost = product_token_cost(stats=True, buybox=True)
    account = requests.get(server.url + "/sim/account", timeout=10).json()
    assert account["consumed"] == 3 * 100 * cost
    assert sum(b.tokens.tokens_consumed for b in batches.values()) == account["consumed"]
    # 300 tokens a minute, 300 a batch: each later batch waited for one refill (429, refillIn).
    assert len(waits) == 2 and account["refused"] == 2
    assert all(1.0 <= w <= 1.2 for w in waits)


def test_tokens_follow_keepas_rules(catalog: Catalog) -> None:
    """Refill per minute, an hour's worth at most, negative once, 429 while not positive."""
    server, clock = serve(catalog, rate=20, factor=60.0, start_tokens=20)
    try:
        asins = ",".join(catalog.asins(range(10)))
        first = get(server, "/product", domain="3", asin=asins, stats="90", buybox="1")
        assert first.status_code == 200
        body = first.json()
        assert body["tokensConsumed"] == 30 and body["tokensLeft"] == -10
        refused = get(server, "/product", domain="3", asin=asins, stats="90", buybox="1")
        assert refused.status_code == 429
        assert refused.json()["tokensConsumed"] == 0
        # refillIn is real milliseconds: at ×60, one simulated minute is one real second.
        assert 0 < refused.json()["refillIn"] <= 1000
        clock.advance_simulated_minutes(1, 60.0)
        assert get(server, "/token").json()["tokensLeft"] == 10
        # Two hours idle: the balance holds one hour's refills, the rest expired.
        clock.advance_simulated_minutes(120, 60.0)
        status = get(server, "/token").json()
        assert status["tokensLeft"] == 60 * 20
        account = requests.get(server.url + "/sim/account", timeout=10).json()
        assert account["consumed"] == 30 and account["refused"] == 1
        assert account["granted"] - account["consumed"] == status["tokensLeft"]
    finally:
        server.shutdown()
        server.server_close()


def test_product_finder_pages_sorts_and_costs_as_documented(
    sim: tuple[SimulatorServer, ManualTime], catalog: Catalog
) -> None:
    server, _ = sim
    selection = {
        "current_SALES_lte": 50_000,
        "current_NEW_gte": 3_000,
        "perPage": 100,
        "page": 0,
        "sort": [["current_SALES", "asc"]],
    }
    first = get(server, "/query", domain="3", selection=json.dumps(selection)).json()
    assert len(first["asinList"]) == 100 and first["totalResults"] > 100
    assert first["tokensConsumed"] == 10 + 1
    second = get(
        server, "/query", domain="3", selection=json.dumps({**selection, "page": 1})
    ).json()
    assert not set(first["asinList"]) & set(second["asinList"])
    indexes = [catalog.index(a) for a in first["asinList"] + second["asinList"]]
    minute = (first["timestamp"] - START_MS) / MINUTE_MS
    state = state_at(catalog, np.array(indexes), minute, ("DE",))
    ranks = state.rank[:, 0]
    assert (ranks <= 50_000).all() and list(ranks) == sorted(ranks)
    assert (state.new[:, 0] >= 3_000).all()
    # An unknown field is refused, and costs nothing.
    bad = get(server, "/query", domain="3", selection=json.dumps({"current_RATING_gte": 40}))
    assert bad.status_code == 400 and "current_RATING_gte" in bad.json()["error"]["message"]
    assert bad.json()["tokensConsumed"] == 0
    too_far = get(server, "/query", domain="3", selection=json.dumps({"perPage": 5000, "page": 2}))
    assert too_far.status_code == 400


def test_deals_are_the_promotions_of_the_moment(
    sim: tuple[SimulatorServer, ManualTime], catalog: Catalog
) -> None:
    server, _ = sim
    request = {
        "page": 0,
        "domainId": 3,
        "priceTypes": [1],
        "deltaPercentRange": [20, 90],
        "dateRange": 0,
    }
    answer = requests.post(
        server.url + "/deal", params={"key": KEY}, data=json.dumps(request), timeout=10
    ).json()
    found = answer["deals"]["dr"]
    assert 0 < len(found) <= 150
    assert answer["tokensConsumed"] == 5
    # Keepa's shape: [DealInterval][CsvType]; dateRange 0 (day), priceTypes 1 (NEW).
    assert all(20 <= d["deltaPercent"][0][1] <= 90 for d in found)
    assert all(d["current"][1] + d["delta"][0][1] == d["avg"][0][1] for d in found)
    assert all(d["deltaPercent"][1][1] == -1 and d["current"][0] == -1 for d in found)
    minute = (answer["timestamp"] - START_MS) / MINUTE_MS
    state = state_at(catalog, np.array([catalog.index(d["asin"]) for d in found]), minute, ("DE",))
    assert state.promotion[:, 0].all()
    # No sortType: the biggest drop in percent first (the reading taken).
    drops = [d["deltaPercent"][0][1] for d in found]
    assert drops == sorted(drops, reverse=True)

    def deals(sort_type: int) -> tuple[int, list[dict]]:
        answer = requests.post(
            server.url + "/deal",
            params={"key": KEY},
            data=json.dumps({**request, "sortType": sort_type}),
            timeout=10,
        )
        return answer.status_code, answer.json().get("deals", {}).get("dr", [])

    # 1: the newest deal first — the promotion that began last.
    status, newest = deals(1)
    state = state_at(catalog, np.array([catalog.index(d["asin"]) for d in newest]), minute, ("DE",))
    assert status == 200 and list(state.spell_start[:, 0]) == sorted(state.spell_start[:, 0])[::-1]
    # -4: the smallest drop first; -1 is not invertible, as Keepa documents.
    _, smallest = deals(-4)
    assert smallest[0]["deltaPercent"][0][1] <= drops[-1]
    # creationDate: the drop's start (the promotion's spell), in Keepa minutes.
    began = [(d["creationDate"] + 21_564_000) * MINUTE_MS for d in newest]
    starts = [START_MS + s * MINUTE_MS for s in state.spell_start[:, 0]]
    assert began == [int(at // MINUTE_MS * MINUTE_MS) for at in starts]
    assert deals(-1)[0] == 400 and deals(7)[0] == 400


def test_best_sellers_rank_a_category_and_cost_fifty(
    sim: tuple[SimulatorServer, ManualTime], catalog: Catalog
) -> None:
    server, _ = sim
    answer = get(server, "/bestsellers", domain="3", category="562066").json()
    listed = answer["bestSellersList"]["asinList"]
    assert answer["tokensConsumed"] == 50 and 0 < len(listed) <= 500
    minute = (answer["timestamp"] - START_MS) / MINUTE_MS
    state = state_at(catalog, np.array([catalog.index(a) for a in listed]), minute, ("DE",))
    assert list(state.rank[:, 0]) == sorted(state.rank[:, 0])


def test_prices_move_with_simulated_time_and_opportunities_come_and_go(catalog: Catalog) -> None:
    indexes = np.arange(catalog.size)
    promoted = [state_at(catalog, indexes, minute).promotion for minute in (0, 60, 600, 6000)]
    share = [p.mean() for p in promoted]
    assert all(0.03 < s < 0.07 for s in share)
    # Spells end: most of the promotions of minute 0 are over ten hours later.
    still = (promoted[0] & promoted[2]).sum() / promoted[0].sum()
    assert still < 0.3


def test_a_wrong_key_is_refused(sim: tuple[SimulatorServer, ManualTime]) -> None:
    server, _ = sim
    answer = requests.get(server.url + "/token", params={"key": "nope"}, timeout=10)
    assert answer.status_code == 401
    assert quote(KEY) not in answer.text


def test_the_ground_truth_is_the_pipelines_rules_on_the_true_offers() -> None:
    small = Catalog.generate(SEED, 3_000)
    opened = truth.open_at(small, 600.0, START_MS, FEES, load_rules_config())
    assert opened, "a market of 3 000 products has opportunities at any moment"
    state = state_at(small, np.array([small.index(o.asin) for o in opened]), 600.0)
    # An opportunity buys where the offer is cheaper than where it sells, in EUR.
    for row, found in enumerate(opened):
        buy, sell = MARKETS.index(found.buy_market), MARKETS.index(found.sell_market)
        to_eur = [1.15 if m == "GB" else 1.0 for m in MARKETS]
        assert state.new[row, buy] * to_eur[buy] < state.buy_box[row, sell] * to_eur[sell]
        assert found.profit_eur_cents > 0
    assert truth.open_at(small, 600.0, START_MS, FEES, load_rules_config()) == opened


def test_devservices_runs_the_simulator_as_a_local_service(tmp_path: Path) -> None:
    """`KEEPA_SIM=1 … up` starts it supervised, writes the clients' settings (0600, the key
    never in argv), answers with that key; `down` stops it."""
    port = random.Random().randrange(20_000, 32_000)
    env = {
        **os.environ,
        "DEVSERVICES_HOME": str(tmp_path),
        "KEEPA_SIM": "1",
        "KEEPA_SIM_PORT": str(port),
        "KEEPA_SIM_PRODUCTS": "5000",
    }

    def devservices(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devservices", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    up = devservices("up", "keepa-sim")
    try:
        assert up.returncode == 0, up.stderr
        exports = dict(
            line.removeprefix("export ").split("=", 1)
            for line in (tmp_path / "keepa-sim.env").read_text().splitlines()
            if line.startswith("export ")
        )
        assert (tmp_path / "keepa-sim.env").stat().st_mode & 0o777 == 0o600
        assert exports["KEEPA_API_URL"] == f"http://127.0.0.1:{port}"
        key = exports["KEEPA_API_KEY"]
        pid = json.loads((tmp_path / "keepa-sim" / "keepa-sim.pid").read_text())["pid"]
        assert key not in Path(f"/proc/{pid}/cmdline").read_text()
        answer = requests.get(f"http://127.0.0.1:{port}/token", params={"key": key}, timeout=10)
        assert answer.status_code == 200 and answer.json()["refillRate"] == 300
        assert devservices("status", "keepa-sim").returncode == 0
    finally:
        # A plain `down` stops it too, though KEEPA_SIM is no longer set.
        env.pop("KEEPA_SIM")
        down = devservices("down")
    assert down.returncode == 0, down.stderr
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/token", timeout=5)


def test_listings_carry_keepas_risk_fields_and_amazons_monthly_badge(catalog: Catalog) -> None:
    """A third of the products show Amazon's "bought in the past month" in its steps; a few
    declare hazardous materials, a few are multipacks in one store, some return often."""
    sold = catalog.monthly_sold
    shown = sold[sold > 0]
    assert 0.30 < len(shown) / len(sold) < 0.40
    steps = np.where(shown < 100, 50, np.where(shown < 1_000, 100, 1_000))
    assert (shown >= 50).all() and ((shown % steps == 0) | (shown >= 10_000)).all()
    facts = [catalog.listing(i, m) for i in range(2_000) for m in MARKETS]
    hazmat = [f for f in facts if f.get("hazardousMaterials")]
    assert 0.01 < len(hazmat) / len(facts) < 0.05
    multipacks = {
        i
        for i in range(2_000)
        if len({catalog.listing(i, m)["packageQuantity"] for m in MARKETS}) > 1
    }
    assert 10 <= len(multipacks) <= 70
    assert {f["returnRate"] for f in facts} == {None, 1, 2}
