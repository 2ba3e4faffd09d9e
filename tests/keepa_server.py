"""A local stand-in for Keepa's ``/product`` endpoint, for tests of the HTTP client.

It serves product objects (e.g. from ``tools.sample_generator``) in Keepa's response format
on 127.0.0.1 (a free port), records every request, and can be scripted to answer the next
requests with special responses (429 with ``refillIn``, 500, 402, a non-JSON 200 body)::

    with KeepaTestServer(bodies=generate_sample(50)) as server:
        server.script([tokens_exhausted(refill_in_ms=1500)])
        client = KeepaHttpClient("k", base_url=server.url, sleep=waits.append)
        ...
        assert server.requests[0].params["domain"] == "3"
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from arbitrage.domain.keepa_history import KEEPA_EPOCH_OFFSET_MINUTES
from arbitrage.domain.keepa_parsing import MAX_ASINS_PER_REQUEST, product_token_cost
from arbitrage.domain.keepa_signals import CSV_BUY_BOX_SHIPPING
from arbitrage.domain.markets import MARKET_BY_DOMAIN_ID, MARKETPLACES


@dataclass(frozen=True)
class ScriptedResponse:
    status: int
    body: bytes
    content_type: str = "application/json;charset=UTF-8"
    delay_s: float = 0.0  # sleep before answering, to provoke client timeouts
    location: str | None = None  # a redirect's Location header


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    status: int  # what the server answered

    @property
    def asins(self) -> list[str]:
        return [a for a in self.params.get("asin", "").split(",") if a]


def _token_header(tokens_left: int, refill_in_ms: int, consumed: int) -> dict[str, Any]:
    return {
        "timestamp": int(time.time() * 1000),
        "tokensLeft": tokens_left,
        "refillIn": refill_in_ms,
        "refillRate": 20,
        "tokenFlowReduction": 0,
        "tokensConsumed": consumed,
        "processingTimeInMs": 3,
    }


def json_response(status: int, body: Mapping[str, Any], delay_s: float = 0.0) -> ScriptedResponse:
    return ScriptedResponse(status, json.dumps(body).encode("utf-8"), delay_s=delay_s)


def tokens_exhausted(refill_in_ms: int = 1500, tokens_left: int = -30) -> ScriptedResponse:
    """HTTP 429 as Keepa sends it when the token budget is used up."""
    return json_response(429, _token_header(tokens_left, refill_in_ms, 0))


def server_error(status: int = 500) -> ScriptedResponse:
    return json_response(status, {"error": {"type": "INTERNAL_SERVER_ERROR", "message": "oops"}})


def payment_required() -> ScriptedResponse:
    body = _token_header(0, 60_000, 0)
    body["error"] = {"type": "PAYMENT_REQUIRED", "message": "No active subscription."}
    return json_response(402, body)


def refused(status: int, message: str = "rejected") -> ScriptedResponse:
    return json_response(status, {"error": {"type": "REQUEST_REJECTED", "message": message}})


def redirect(location: str, status: int = 302) -> ScriptedResponse:
    """A redirect elsewhere, as a hijacked proxy or a misconfigured gateway would answer."""
    return ScriptedResponse(status, b"", content_type="text/plain", location=location)


def not_json(text: str = "<html><body>502 Bad Gateway</body></html>") -> ScriptedResponse:
    return ScriptedResponse(200, text.encode("utf-8"), content_type="text/html")


def slow(delay_s: float, then: ScriptedResponse | None = None) -> ScriptedResponse:
    """Answer after ``delay_s`` (default: an empty 200 body), for client timeouts."""
    answer = then or json_response(200, {**_token_header(100, 1000, 0), "products": []})
    return ScriptedResponse(answer.status, answer.body, answer.content_type, delay_s)


# Stats arrays indexed by Product.CsvType (Stats.java): the buy box entry is there only with
# buybox=1 (or offers).
CSV_INDEXED_STATS = (
    "current",
    "avg",
    "avg30",
    "avg90",
    "avg180",
    "avg365",
    "atIntervalStart",
    "outOfStockPercentageInInterval",
    "outOfStockPercentage30",
    "outOfStockPercentage90",
)


def as_requested(product: Mapping[str, Any], params: Mapping[str, str]) -> dict[str, Any]:
    """A stored product object as Keepa answers it for these request parameters.

    Without ``stats`` there is no statistics object (Product.java: "only set if the stats
    parameter was used"); without ``buybox=1`` the statistics lack every buy box field (the
    ``buyBox*`` keys, and BUY_BOX_SHIPPING in the CsvType-indexed arrays is -2, not set).
    """
    answer = dict(product)
    answer["csv"] = _csv_as_requested(answer.get("csv"), params)
    stats = answer.get("stats")
    if not isinstance(stats, Mapping):
        return answer
    if not params.get("stats"):
        answer.pop("stats")
        return answer
    if params.get("buybox") != "1":
        trimmed = {key: value for key, value in stats.items() if not key.startswith("buyBox")}
        for key in CSV_INDEXED_STATS:
            array = trimmed.get(key)
            if isinstance(array, list) and len(array) > CSV_BUY_BOX_SHIPPING:
                array = list(array)
                array[CSV_BUY_BOX_SHIPPING] = -2
                trimmed[key] = array
        answer["stats"] = trimmed
    return answer


# Keepa's csv arrays with a stride of 3 ([time, price, shipping]): the *_SHIPPING types.
_SHIPPING_SERIES = {7, *range(18, 30)}


def _csv_as_requested(csv: Any, params: Mapping[str, str]) -> Any:
    """``history=0``: no csv at all. ``days=N``: each series cut to its entries of the last N
    days (24-hour days) plus the last one before them, which is still in effect (Keepa's
    documented behaviour: "the oldest data point … may have a date value which is out of the
    specified range"). Without ``buybox=1`` there is no BUY_BOX_SHIPPING history."""
    if not isinstance(csv, list) or params.get("history") == "0":
        return None
    days = int(params.get("days") or 0)
    cutoff = (int(time.time()) // 60 - KEEPA_EPOCH_OFFSET_MINUTES) - days * 24 * 60
    answer: list[Any] = []
    for index, series in enumerate(csv):
        if index == CSV_BUY_BOX_SHIPPING and params.get("buybox") != "1":
            series = None
        if days > 0 and isinstance(series, list):
            stride = 3 if index in _SHIPPING_SERIES else 2
            starts = [i for i in range(0, len(series) - stride + 1, stride)]
            recent = [i for i in starts if series[i] >= cutoff]
            older = [i for i in starts if series[i] < cutoff]
            keep = older[-1:] + recent
            series = [value for i in keep for value in series[i : i + stride]]
        answer.append(series)
    return answer


def placeholder_product(asin: str, domain_id: int) -> dict[str, Any]:
    """What Keepa returns for an ASIN it has no data on in that marketplace."""
    return {"asin": asin, "domainId": domain_id, "title": None, "stats": None, "csv": None}


class KeepaTestServer:
    """Threaded local HTTP server answering ``GET /product`` like Keepa's API.

    ``products_by_market`` maps a market code to product objects; alternatively ``bodies``
    maps it to whole response bodies (``generate_sample``'s output) whose products are served.
    ASINs the market does not have are answered with a placeholder object (Keepa's way) or,
    with ``unknown_as_placeholder=False``, left out of ``products``.
    """

    def __init__(
        self,
        products_by_market: Mapping[str, Iterable[Mapping[str, Any]]] | None = None,
        *,
        bodies: Mapping[str, Mapping[str, Any]] | None = None,
        unknown_as_placeholder: bool = True,
        tokens_left: int = 5_000,
    ) -> None:
        catalogue: dict[str, dict[str, dict[str, Any]]] = {code: {} for code in MARKETPLACES}
        for market, body in (bodies or {}).items():
            for product in body.get("products") or []:
                catalogue[market][product["asin"]] = dict(product)
        for market, products in (products_by_market or {}).items():
            for product in products:
                catalogue[market][product["asin"]] = dict(product)
        self._catalogue = catalogue
        self._unknown_as_placeholder = unknown_as_placeholder
        self._tokens_left = tokens_left
        self._lock = threading.Lock()
        self._script: deque[ScriptedResponse] = deque()
        self._requests: list[RecordedRequest] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> KeepaTestServer:
        handler = type("KeepaHandler", (_Handler,), {"keepa": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        # A short poll interval makes stop() quick (serve_forever checks for shutdown per poll).
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="keepa-test-server",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> KeepaTestServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the Keepa test server is not running; use it as a context manager")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    # ------------------------------------------------------------------ test controls

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def script(self, responses: Iterable[ScriptedResponse]) -> None:
        """Answer the next requests with these responses, in order, then serve normally."""
        with self._lock:
            self._script.extend(responses)

    def clear(self) -> None:
        with self._lock:
            self._script.clear()
            self._requests.clear()

    # ------------------------------------------------------------------ answering

    def _answer(self, method: str, target: str) -> ScriptedResponse:
        parts = urlsplit(target)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        with self._lock:
            scripted = self._script.popleft() if self._script else None
            response = scripted or self._product_response(parts.path, params)
            self._requests.append(RecordedRequest(method, parts.path, params, response.status))
        return response

    def _product_response(self, path: str, params: Mapping[str, str]) -> ScriptedResponse:
        if path.rstrip("/") != "/product":
            return refused(404, f"no endpoint {path}")
        if not params.get("key"):
            return refused(400, "the key parameter is missing")
        try:
            market = MARKET_BY_DOMAIN_ID[int(params.get("domain", ""))].code
        except (ValueError, KeyError):
            return refused(400, f"invalid domain {params.get('domain')!r}")
        asins = [a for a in params.get("asin", "").split(",") if a]
        if not 1 <= len(asins) <= MAX_ASINS_PER_REQUEST:
            return refused(400, f"between 1 and 100 ASINs allowed, got {len(asins)}")
        catalogue = self._catalogue[market]
        domain_id = MARKETPLACES[market].keepa_domain_id
        products = []
        for asin in asins:
            if asin in catalogue:
                products.append(as_requested(catalogue[asin], params))
            elif self._unknown_as_placeholder:
                products.append(placeholder_product(asin, domain_id))
        # 1 token per product, plus 2 with buybox=1 (Keepa's documented extra cost); stats free.
        per_product = product_token_cost(
            stats=bool(params.get("stats")),
            buybox=params.get("buybox") == "1",
            history=params.get("history") != "0",
        )
        consumed = len(asins) * per_product
        self._tokens_left -= consumed
        body = {**_token_header(self._tokens_left, 30_000, consumed), "products": products}
        return json_response(200, body)


class _Handler(BaseHTTPRequestHandler):
    keepa: KeepaTestServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        response = self.keepa._answer("GET", self.path)
        if response.delay_s:
            time.sleep(response.delay_s)
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            if response.location is not None:
                self.send_header("Location", response.location)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing left to answer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean; requests are recorded instead
