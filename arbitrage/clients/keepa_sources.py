"""The Keepa source: one interface, two implementations (live HTTP API, bundled sample).

Like project_fully_featured's ``HNClient`` → ``HNAPIClient`` / ``HNSnapshotClient``: both answer
``fetch_batch(market, asins)`` with the same Keepa ``/product`` body shape, and both hand it to
``arbitrage.domain.keepa_parsing``, so a sample run exercises exactly the parsing a live run does.

The API key travels only in the request's query string: it is scrubbed from every log line and
error message this module writes, hidden from ``repr``, and redacted from urllib3's debug log.
"""

from __future__ import annotations

import json
import logging
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import requests

from arbitrage.domain.keepa_discovery import (
    DiscoveryAnswerError,
    Found,
    parse_best_sellers,
    parse_deals,
    parse_finder,
)
from arbitrage.domain.keepa_parsing import (
    MAX_ASINS_PER_REQUEST,
    TokenInfo,
    chunked,
    parse_product_response,
    product_token_cost,
    response_error,
    token_info,
)
from arbitrage.domain.keepa_sample import load_sample_document
from arbitrage.domain.markets import MARKET_BY_DOMAIN_ID, MARKETPLACES
from arbitrage.domain.messages.types import ASIN_PATTERN
from arbitrage.domain.redaction import redact_url, secure_endpoint_problem

DEFAULT_BASE_URL = "https://api.keepa.com"
DEFAULT_SAMPLE_PATH = (
    Path(__file__).resolve().parents[2] / "data" / "sample" / "keepa_sample.json.gz"
)
# Keepa's own Java client waits refillIn + 100 ms, so the refill has surely happened.
REFILL_MARGIN_S = 0.1
# When a 429 carries no refillIn, tokens come back within a minute (Keepa refills per minute).
DEFAULT_REFILL_WAIT_S = 60.0

_KEY_PARAM = re.compile(r"(key=)[^&\s'\"]+")
_QUERY = re.compile(r"\?[^\s)'\"]*")

_REFUSALS: dict[int, str] = {
    400: "bad request — Keepa rejected a parameter such as an ASIN, the domain or stats",
    401: "unauthorized — the API key is not valid",
    402: "payment required — the key has no active subscription or ran out of tokens",
    403: "forbidden — the key may not use this endpoint",
    404: "not found — there is no such endpoint at base_url",
    405: "method not allowed",
}


class KeepaError(RuntimeError):
    """Keepa could not be used for this pull; the message says why and what to do."""


def redact_key(text: str, api_key: str | None = None) -> str:
    """Remove the API key from text: the literal key and any ``key=…`` query parameter."""
    if api_key:
        text = text.replace(api_key, "***")
    return _KEY_PARAM.sub(r"\1***", text)


class _RedactKeyFilter(logging.Filter):
    """urllib3 logs each request URL at DEBUG, query string (and so the key) included."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "key=" in message:
            record.msg, record.args = redact_key(message), None
        return True


def _install_urllib3_redaction() -> None:
    target = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactKeyFilter) for f in target.filters):
        target.addFilter(_RedactKeyFilter())


# --------------------------------------------------------------------------- interface


@dataclass(frozen=True)
class ProductBatch:
    """One ``/product`` answer for up to 100 ASINs in one market."""

    market: str
    requested: tuple[str, ...]
    products: dict[str, dict[str, Any]]  # ASIN → Keepa product object, only those with data
    tokens: TokenInfo

    @property
    def not_found(self) -> list[str]:
        return [asin for asin in self.requested if asin not in self.products]


@dataclass(frozen=True)
class Discovered:
    """One discovery answer: the ASINs found and the request's tokens."""

    found: Found
    tokens: TokenInfo


class KeepaSource(ABC):
    """Where Keepa product objects come from: the live API or the bundled sample."""

    source_name: ClassVar[Literal["keepa", "sample"]]
    # Days of Keepa's csv price history asked for (0: none, history=0); the pull turns them into
    # each market's history block.
    history_days: int = 0

    def __init__(self, batch_size: int = MAX_ASINS_PER_REQUEST) -> None:
        if not 1 <= batch_size <= MAX_ASINS_PER_REQUEST:
            raise ValueError(f"batch_size must be 1 to {MAX_ASINS_PER_REQUEST} (Keepa's limit)")
        self.batch_size = batch_size

    @property
    def tokens_per_product(self) -> int:
        """Keepa's documented cost of one ASIN in one market for the request this source makes
        (the sample imitates the live request: ``stats`` and ``buybox=1``)."""
        return product_token_cost(stats=True, buybox=True, history=self.history_days > 0)

    @abstractmethod
    def fetch_batch(self, market: str, asins: Sequence[str]) -> ProductBatch:
        """The products Keepa has for ``asins`` (at most ``batch_size``) in ``market``."""

    def fetch_products(self, market: str, asins: Sequence[str]) -> Iterator[ProductBatch]:
        """All ``asins`` in one market, one request per ``batch_size`` ASINs."""
        for batch in chunked(list(asins), self.batch_size):
            yield self.fetch_batch(market, batch)

    def _check_request(self, market: str, asins: Sequence[str]) -> int:
        domain_id = _domain_id(market)
        if not 1 <= len(asins) <= self.batch_size:
            raise ValueError(f"a batch holds 1 to {self.batch_size} ASINs, not {len(asins)}")
        bad = [a for a in asins if not ASIN_PATTERN.match(a)]
        if bad:
            raise ValueError(f"not ASINs (10 characters A-Z, 0-9): {', '.join(map(repr, bad))}")
        return domain_id

    @staticmethod
    def _to_batch(market: str, asins: Sequence[str], body: Mapping[str, Any]) -> ProductBatch:
        # The one parsing path both implementations share.
        wanted = set(asins)
        try:
            found = parse_product_response(body, market)
        except ValueError as exc:
            raise KeepaError(str(exc)) from None
        products = {asin: product for asin, product in found if asin in wanted}
        return ProductBatch(market, tuple(asins), products, token_info(body))


# --------------------------------------------------------------------------- live API


class KeepaHttpClient(KeepaSource):
    """Keepa's ``/product`` endpoint over HTTPS with token-budget waits and retries."""

    source_name = "keepa"

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        stats_days: int = 90,
        history_days: int = 0,
        timeout_s: float = 30.0,
        max_wait_s: float = 60.0,
        max_token_waits: int = 20,
        retries: int = 4,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        batch_size: int = MAX_ASINS_PER_REQUEST,
        logger: logging.Logger | None = None,
        sleep: Callable[[float], None] = time.sleep,
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(batch_size)
        if not api_key or not api_key.strip():
            raise ValueError(
                "the Keepa API key is empty; set it (e.g. KEEPA_API_KEY) or use the sample source"
            )
        # The key travels in the query string: never in clear text over a network.
        problem = secure_endpoint_problem(base_url)
        if problem is not None:
            raise ValueError(f"the Keepa base_url {redact_url(base_url)!r} {problem}")
        if stats_days < 1:
            raise ValueError("stats_days must be a positive number of days")
        if history_days < 0:
            raise ValueError("history_days must be 0 (no history) or a positive number of days")
        if retries < 0 or max_token_waits < 0:
            raise ValueError("retries and max_token_waits cannot be negative")
        self._api_key = api_key.strip()
        self.base_url = base_url.rstrip("/")
        self.stats_days = stats_days
        self.history_days = history_days
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.max_token_waits = max_token_waits
        self.retries = retries
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._logger = logger or logging.getLogger(__name__)
        self._sleep = sleep
        self._session = session or requests.Session()
        # Told of every answered request that can spend tokens (the token ledger's record):
        # (endpoint, market, ASINs asked or returned, Keepa's token fields).
        # Told of every answered request: endpoint, market, ASINs asked or found, tokens.
        self.observer: Callable[[str, str, Sequence[str], TokenInfo], None] | None = None
        _install_urllib3_redaction()

    def __repr__(self) -> str:
        return (
            f"KeepaHttpClient(base_url={self.base_url!r}, api_key='***', "
            f"stats_days={self.stats_days}, history_days={self.history_days}, "
            f"batch_size={self.batch_size})"
        )

    def close(self) -> None:
        self._session.close()

    def fetch_batch(self, market: str, asins: Sequence[str]) -> ProductBatch:
        domain_id = self._check_request(market, asins)
        params = {
            "key": self._api_key,
            "domain": str(domain_id),
            "asin": ",".join(asins),
            "stats": str(self.stats_days),
            # Without buybox=1 Keepa leaves BUY_BOX_SHIPPING out of stats.current (and out of
            # the csv histories).
            "buybox": "1",
        }
        if self.history_days > 0:
            # The csv price histories of the last history_days days (KEEPA_HISTORY_DAYS).
            params["history"] = "1"
            params["days"] = str(self.history_days)
        else:
            # No csv histories: stats.current holds everything else we read, and they are bulky.
            params["history"] = "0"
        what = f"{market} batch of {len(asins)} ASINs"
        body = self._get("/product", params, what)
        self._observe("/product", market, asins, token_info(body))
        return self._to_batch(market, asins, body)

    # ------------------------------------------------------------------ discovery

    def product_finder(self, market: str, selection: Mapping[str, Any]) -> Discovered:
        """One page of Keepa's Product Finder (``/query``): ``selection`` carries ``page`` and
        ``perPage`` with the filters, as Keepa's query JSON."""
        domain_id = _domain_id(market)
        params = {"key": self._api_key, "domain": str(domain_id), "selection": _json(selection)}
        body = self._get("/query", params, f"{market} Product Finder page")
        return self._discovered("/query", market, parse_finder, body)

    def deals(self, request: Mapping[str, Any]) -> Discovered:
        """One page (up to 150) of Keepa's Deals (``/deal``); ``request`` is Keepa's deal
        request JSON, its market in ``domainId``."""
        params = {"key": self._api_key, "selection": _json(request)}
        body = self._get("/deal", params, "Deals page")
        market = MARKET_BY_DOMAIN_ID.get(request.get("domainId"))  # type: ignore[arg-type]
        price_types = request.get("priceTypes") or [1]
        date_range = request.get("dateRange", 0)

        def parse(answer: Mapping[str, Any]) -> Found:
            return parse_deals(answer, int(price_types[0]), int(date_range))

        return self._discovered("/deal", market.code if market else "", parse, body)

    def best_sellers(self, market: str, category: int) -> Discovered:
        """A root category's best sellers in ``market`` (``/bestsellers``)."""
        domain_id = _domain_id(market)
        params = {"key": self._api_key, "domain": str(domain_id), "category": str(category)}
        body = self._get("/bestsellers", params, f"{market} Best Sellers of {category}")
        return self._discovered("/bestsellers", market, parse_best_sellers, body)

    def token_status(self) -> TokenInfo:
        """The account's tokens now (``/token``, free)."""
        return token_info(self._get("/token", {"key": self._api_key}, "token status"))

    def _discovered(
        self,
        endpoint: str,
        market: str,
        parse: Callable[[Mapping[str, Any]], Found],
        body: Mapping[str, Any],
    ) -> Discovered:
        tokens = token_info(body)
        try:
            found = parse(body)
        except DiscoveryAnswerError as exc:
            # Answered, so spent: the ledger hears of it before the run fails.
            self._observe(endpoint, market, (), tokens)
            raise KeepaError(str(exc)) from None
        self._observe(endpoint, market, found.asins, tokens)
        return Discovered(found, tokens)

    def _observe(self, endpoint: str, market: str, asins: Sequence[str], tokens: TokenInfo) -> None:
        if self.observer is not None:
            self.observer(endpoint, market, asins, tokens)

    # ------------------------------------------------------------------ HTTP

    def _scrub(self, text: str) -> str:
        # Query strings carry the key and up to 100 ASINs: neither helps a reader of the error.
        return _QUERY.sub("?…", redact_key(text, self._api_key))

    def _backoff(self, failures: int) -> float:
        return min(self.backoff_cap_s, self.backoff_base_s * 2 ** (failures - 1))

    def _get(self, path: str, params: Mapping[str, str], what: str) -> dict[str, Any]:
        failures = 0
        token_waits = 0
        while True:
            # Errors are raised outside the except blocks, so no exception chain (whose text
            # holds the request URL and so the key) is attached to what the caller sees.
            problem: str | None = None
            fatal: str | None = None
            response: requests.Response | None = None
            try:
                self._logger.debug("Keepa GET %s for the %s", path, what)
                # Never followed: a redirect would carry the key (in the query) elsewhere.
                response = self._session.get(
                    self.base_url + path,
                    params=params,
                    timeout=self.timeout_s,
                    allow_redirects=False,
                )
            except requests.Timeout:
                problem = f"no answer within {self.timeout_s:g} s"
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
                problem = f"connection failed: {self._scrub(str(exc))}"
            except requests.RequestException as exc:
                fatal = f"the request to Keepa could not be sent: {self._scrub(str(exc))}"
            if fatal is not None:
                raise KeepaError(fatal)

            if response is not None:
                status = response.status_code
                if status == 200:
                    return self._json_body(response, what)
                if status == 429:
                    token_waits += 1
                    self._wait_for_tokens(response, what, token_waits)
                    continue
                if 300 <= status < 400:
                    raise KeepaError(
                        f"Keepa answered HTTP {status}, a redirect; it is not followed, since "
                        "the key is sent only to KEEPA_API_URL. Check KEEPA_API_URL"
                    )
                if status < 500:
                    raise KeepaError(self._refusal(response))
                problem = f"HTTP {status}"

            failures += 1
            if failures > self.retries:
                raise KeepaError(
                    f"Keepa did not answer the {what} after {failures} attempts; "
                    f"last problem: {problem}"
                )
            delay = self._backoff(failures)
            self._logger.warning(
                "Keepa request for the %s failed (%s); retrying in %.1f s (attempt %d of %d)",
                what,
                problem,
                delay,
                failures + 1,
                self.retries + 1,
            )
            self._sleep(delay)

    def _wait_for_tokens(self, response: requests.Response, what: str, waits: int) -> None:
        body = _json_or_none(response)
        tokens = token_info(body) if isinstance(body, dict) else None
        refill_ms = tokens.refill_in_ms if tokens is not None else None
        wait_s = (
            refill_ms / 1000 + REFILL_MARGIN_S
            if refill_ms is not None and refill_ms >= 0
            else DEFAULT_REFILL_WAIT_S
        )
        if waits > self.max_token_waits:
            raise KeepaError(
                f"Keepa still lacked tokens for the {what} after {waits - 1} waits; the plan's "
                "refill rate is too low for this ASIN list: pull fewer ASINs or fewer markets "
                "per run, or buy a larger token plan"
            )
        if wait_s > self.max_wait_s:
            raise KeepaError(
                f"Keepa is out of tokens (HTTP 429) and refills in {wait_s:.0f} s, longer than "
                f"max_wait_s={self.max_wait_s:g} s; raise max_wait_s, pull fewer ASINs per run, "
                "or buy a larger token plan"
            )
        left = tokens.tokens_left if tokens is not None else None
        rate = tokens.refill_rate if tokens is not None else None
        self._logger.warning(
            "Keepa is out of tokens (tokens left: %s, refill rate: %s/min); "
            "waiting %.1f s before retrying the %s",
            "unknown" if left is None else left,
            "unknown" if rate is None else rate,
            wait_s,
            what,
        )
        self._sleep(wait_s)

    def _json_body(self, response: requests.Response, what: str) -> dict[str, Any]:
        body = _json_or_none(response)
        if body is None:
            snippet = self._scrub(response.text[:80])
            raise KeepaError(f"Keepa answered HTTP 200 with a body that is not JSON: {snippet!r}")
        if not isinstance(body, dict):
            kind = type(body).__name__
            raise KeepaError(f"Keepa answered HTTP 200 with JSON that is a {kind}, not an object")
        error = response_error(body)
        if error is not None:
            raise KeepaError(f"Keepa reported an error for the {what}: {self._scrub(error)}")
        return body

    def _refusal(self, response: requests.Response) -> str:
        status = response.status_code
        reason = _REFUSALS.get(status, response.reason or "client error")
        message = f"Keepa refused the request (HTTP {status}: {reason})"
        body = _json_or_none(response)
        detail = response_error(body) if isinstance(body, dict) else None
        if detail:
            message += f"; Keepa says: {self._scrub(detail)}"
        return message


def _domain_id(market: str) -> int:
    if market not in MARKETPLACES:
        known = ", ".join(sorted(MARKETPLACES))
        raise ValueError(f"unknown marketplace {market!r}; known marketplaces are {known}")
    return MARKETPLACES[market].keepa_domain_id


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def _json_or_none(response: requests.Response) -> Any:
    try:
        return json.loads(response.content)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both derive from it
        return None


# --------------------------------------------------------------------------- bundled sample


class KeepaSampleSource(KeepaSource):
    """Answers from the bundled sample file as Keepa would, for runs without an API key."""

    source_name = "sample"

    def __init__(
        self, path: str | Path = DEFAULT_SAMPLE_PATH, *, batch_size: int = MAX_ASINS_PER_REQUEST
    ) -> None:
        super().__init__(batch_size)
        self.path = Path(path)
        self._markets: dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]] | None = None
        self._asins: list[str] = []

    def __repr__(self) -> str:
        return f"KeepaSampleSource(path={str(self.path)!r}, batch_size={self.batch_size})"

    def _load(self) -> dict[str, tuple[dict[str, Any], dict[str, dict[str, Any]]]]:
        if self._markets is None:
            if not self.path.is_file():
                raise KeepaError(
                    f"the Keepa sample file {self.path} does not exist; create it with "
                    "python -m tools.sample_generator"
                )
            try:
                document = load_sample_document(self.path)
            except (OSError, ValueError) as exc:
                problem = f"the Keepa sample file {self.path} cannot be read: {exc}"
                raise KeepaError(problem) from None
            markets = {}
            for market, body in document["markets"].items():
                products = body.get("products") or []
                index = {p["asin"]: p for p in products if isinstance(p, dict) and "asin" in p}
                header = {k: v for k, v in body.items() if k != "products"}
                markets[market] = (header, index)
            self._markets = markets
            self._asins = list(document.get("asins") or [])
        return self._markets

    def asins(self) -> list[str]:
        """The sample's ASINs in generation order (the default ASIN list)."""
        self._load()
        return list(self._asins)

    def fetch_batch(self, market: str, asins: Sequence[str]) -> ProductBatch:
        self._check_request(market, asins)
        header, index = self._load().get(market, ({}, {}))
        body = {**header, "products": [index[a] for a in asins if a in index]}
        batch = self._to_batch(market, asins, body)
        # A sample costs nothing and has no token budget to report.
        tokens = replace(batch.tokens, tokens_consumed=0, tokens_left=None, refill_in_ms=None)
        return replace(batch, tokens=tokens)
