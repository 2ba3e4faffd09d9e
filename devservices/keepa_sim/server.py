"""The simulator's HTTP server: Keepa's ``/product``, ``/query``, ``/deal``, ``/bestsellers`` and
``/token`` over the simulated market, in Keepa's request and response formats, with Keepa's
token accounting (tokens.py). ``/sim/account`` (not Keepa's) reports the account's counters for
measurement.

Costs, as Keepa documents them (docs/keepa-simulator.md gives the sources and the readings):
``/product`` 1 token per product and 2 more with ``buybox``; ``/query`` 10 plus 1 per 100 ASINs
returned; ``/deal`` 5 per page of up to 150 deals; ``/bestsellers`` 50; ``/token`` nothing. A
refused request (429, a bad parameter) costs nothing.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from arbitrage.domain.markets import MARKET_BY_DOMAIN_ID
from devservices.keepa_sim.catalog import MARKETS, Catalog
from devservices.keepa_sim.finder import (
    BEST_SELLERS_COST,
    DEAL_COST,
    SelectionError,
    best_sellers,
    deals,
    finder_cost,
    product_finder,
)
from devservices.keepa_sim.market import state_at
from devservices.keepa_sim.products import placeholder, product_objects
from devservices.keepa_sim.tokens import SimClock, TokenAccount, TokenStatus

# /product: 1 token per product; the buybox parameter 2 more; stats and history nothing more.
PRODUCT_COST = 1
BUYBOX_EXTRA = 2
MAX_ASINS_PER_REQUEST = 100


class RequestError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


@dataclass
class Simulator:
    """The market, the clock and one account; what the handler answers from."""

    catalog: Catalog
    clock: SimClock
    account: TokenAccount
    api_key: str

    def minute(self) -> float:
        return self.clock.minute()


def _market(params: Mapping[str, str], key: str = "domain") -> str:
    raw = params.get(key, "")
    try:
        found = MARKET_BY_DOMAIN_ID.get(int(raw))
    except ValueError:
        found = None
    if found is None or found.code not in MARKETS:
        served = (str(d) for d, m in sorted(MARKET_BY_DOMAIN_ID.items()) if m.code in MARKETS)
        raise RequestError(
            400,
            "invalidParameter",
            f"{key}={raw!r}: the simulator serves the domains " + ", ".join(served),
        )
    return found.code


def _json_param(params: Mapping[str, str], body: bytes, name: str) -> Any:
    raw = params.get(name) or body.decode("utf-8", "replace")
    if not raw:
        raise RequestError(400, "invalidParameter", f"{name} is missing")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestError(400, "invalidParameter", f"{name} is not JSON: {exc}") from None


def _flag(params: Mapping[str, str], name: str) -> bool:
    return params.get(name, "0") not in ("", "0")


class _Handler(BaseHTTPRequestHandler):
    server: SimulatorServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are counted, not logged (the key is in every query string)

    def do_GET(self) -> None:
        self._answer(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self._answer(self.rfile.read(length))

    def _answer(self, body: bytes) -> None:
        started = time.perf_counter()
        split = urlsplit(self.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        sim = self.server.simulator
        try:
            route = _ROUTES.get(split.path.rstrip("/"))
            if route is None:
                raise RequestError(404, "notFound", f"no endpoint {split.path}")
            if split.path.startswith("/sim/"):
                status, payload = 200, route(sim, params, body)
            else:
                if params.get("key") != sim.api_key:
                    raise RequestError(401, "invalidKey", "the key is not valid")
                status, payload = route(sim, params, body)
        except RequestError as exc:
            status = exc.status
            payload = {
                **sim.account.status().fields(0),
                "error": {"type": exc.kind, "message": exc.message},
            }
        payload["processingTimeInMs"] = round((time.perf_counter() - started) * 1000)
        data = json.dumps(payload).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.count(split.path, status)


def _charged(
    sim: Simulator, cost: Callable[[], int] | int, answer: Callable[[], dict[str, Any]]
) -> tuple[int, dict[str, Any]]:
    """Charge the request, then answer it; a 429 (balance not positive) costs nothing."""
    result: dict[str, Any] = {}

    def priced() -> int:
        # The answer is computed once admitted, so a cost that depends on it is exact.
        result.update(answer())
        return cost() if callable(cost) else cost

    served, status, charged = sim.account.charge(priced)
    if not served:
        return 429, status.fields(0)
    return 200, {**status.fields(charged), **result}


def _product(sim: Simulator, params: Mapping[str, str], body: bytes) -> tuple[int, dict]:
    market = _market(params)
    asins = [a for a in params.get("asin", "").split(",") if a]
    if not asins or len(asins) > MAX_ASINS_PER_REQUEST:
        raise RequestError(
            400, "invalidParameter", f"asin must list 1 to {MAX_ASINS_PER_REQUEST} ASINs"
        )
    if params.get("offers") or params.get("code"):
        raise RequestError(400, "invalidParameter", "the simulator does not serve offers or code")
    per_product = PRODUCT_COST + (BUYBOX_EXTRA if _flag(params, "buybox") else 0)

    def answer() -> dict[str, Any]:
        indexes = [sim.catalog.index(asin) for asin in asins]
        known = [i for i in indexes if i is not None]
        objects = {}
        if known:
            state = state_at(sim.catalog, np.array(known), sim.minute())
            objects = product_objects(sim.catalog, state, market, sim.clock.start_ms)
        return {
            "products": [
                objects[i] if i is not None else placeholder(asin, market)
                for asin, i in zip(asins, indexes, strict=True)
            ]
        }

    return _charged(sim, per_product * len(asins), answer)


def _query(sim: Simulator, params: Mapping[str, str], body: bytes) -> tuple[int, dict]:
    market = _market(params)
    selection = _json_param(params, body, "selection")
    found: list[Any] = []

    def answer() -> dict[str, Any]:
        try:
            result = product_finder(sim.catalog, market, sim.minute(), selection)
        except SelectionError as exc:
            raise RequestError(400, "invalidParameter", str(exc)) from None
        found.append(len(result.asins))
        return {"asinList": result.asins, "totalResults": result.total_results}

    return _charged(sim, lambda: finder_cost(found[0]), answer)


def _deal(sim: Simulator, params: Mapping[str, str], body: bytes) -> tuple[int, dict]:
    request = _json_param(params, body, "selection")
    if not isinstance(request, dict):
        raise RequestError(400, "invalidParameter", "the deal request must be a JSON object")
    market = _market({"domainId": str(request.get("domainId", ""))}, "domainId")

    def answer() -> dict[str, Any]:
        try:
            page = deals(sim.catalog, market, sim.minute(), request, sim.clock.start_ms)
        except SelectionError as exc:
            raise RequestError(400, "invalidParameter", str(exc)) from None
        return {"deals": {"dr": page, "categoryIds": [], "categoryNames": [], "categoryCount": []}}

    return _charged(sim, DEAL_COST, answer)


def _bestsellers(sim: Simulator, params: Mapping[str, str], body: bytes) -> tuple[int, dict]:
    market = _market(params)
    try:
        category = int(params.get("category", ""))
    except ValueError:
        raise RequestError(400, "invalidParameter", "category must be a node id") from None

    def answer() -> dict[str, Any]:
        listed = best_sellers(sim.catalog, market, sim.minute(), category)
        return {
            "bestSellersList": {
                "domainId": int(params["domain"]),
                "lastUpdate": int(sim.minute()),
                "categoryId": category,
                "asinList": listed,
            }
        }

    return _charged(sim, BEST_SELLERS_COST, answer)


def _token(sim: Simulator, params: Mapping[str, str], body: bytes) -> tuple[int, dict]:
    return 200, sim.account.status().fields(0)


def _account(sim: Simulator, params: Mapping[str, str], body: bytes) -> dict[str, Any]:
    account = sim.account
    status: TokenStatus = account.status()
    return {
        **status.fields(0),
        "granted": account.granted,
        "consumed": account.consumed,
        "expired": account.expired,
        "refused": account.refused,
        "simulatedMinute": sim.minute(),
        "seed": sim.catalog.seed,
        "catalogSize": sim.catalog.size,
        "timeFactor": sim.clock.factor,
    }


_ROUTES: dict[str, Callable[..., Any]] = {
    "/product": _product,
    "/query": _query,
    "/deal": _deal,
    "/bestsellers": _bestsellers,
    "/token": _token,
    "/sim/account": _account,
}


class SimulatorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        super().__init__(address, _Handler)
        self.simulator = simulator
        self.requests: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()

    def count(self, path: str, status: int) -> None:
        with self._lock:
            self.requests[(path, status)] = self.requests.get((path, status), 0) + 1

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"
