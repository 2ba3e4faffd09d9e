"""A local stand-in for Amazon's SP-API Product Fees operation ``getMyFeesEstimates`` and for
Login with Amazon's token endpoint, built from Amazon's published model (productFeesV0.json in
github.com/amzn/selling-partner-api-models): its request and result shapes, the
``x-amzn-RateLimit-Limit`` / ``x-amzn-RequestId`` headers, the ``errors`` bodies of 400, 403 and
429, and per-item ``ClientError`` / ``ServiceError`` results inside a 200.

What it charges comes from a fee book the test writes, per (ASIN, store, programme): a referral
percentage of the listing price with a minimum, a closing fee, a fulfilment fee, the digital
services fee as percentages of the selling and the FBA fees, and VAT on each fee. An (ASIN,
store, programme) the book lacks is answered as Amazon answers an item it cannot estimate: a
``ClientError`` result beside the others' ``Success``.

Throttling is a token bucket per server (the operation's usage plan, 0.5/s burst 1 unless told
otherwise); access tokens expire after ``token_lifetime_s`` or when ``expire_tokens()`` says so.
It listens on 127.0.0.1, a port in 20000-32000.
"""

from __future__ import annotations

import json
import random
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from arbitrage.domain.markets import MARKET_BY_AMAZON_ID
from arbitrage.domain.money import round_half_even

FEES_PATH = "/products/fees/v0/feesEstimate"
LWA_PATH = "/auth/o2/token"
SELLER_ID = "A2STANDINSELLER"
EXPIRED = {
    "code": "Unauthorized",
    "message": "Access to requested resource is denied.",
    "details": "The access token you provided has expired.",
}
DENIED = {
    "code": "Unauthorized",
    "message": "Access to requested resource is denied.",
    "details": "",
}
QUOTA = {
    "code": "QuotaExceeded",
    "message": "You exceeded your quota for the requested resource.",
    "details": "",
}
CLIENT_ERROR = {
    "Type": "Sender",
    "Code": "InvalidParameterValue",
    "Message": "There is an client-side error. Please verify your inputs.",
    "Detail": [],
}
SERVICE_ERROR = {
    "Type": "Receiver",
    "Code": "InternalError",
    "Message": "There is an server-side error. Please try again later.",
    "Detail": [],
}


@dataclass(frozen=True)
class BookEntry:
    """What Amazon charges for one (ASIN, store, programme), minor units of the store's
    currency; percentages × 100."""

    referral_pct_x100: int = 1500
    referral_min_minor: int = 0
    closing_minor: int = 0
    fulfilment_minor: int = 0
    dst_selling_pct_x100: int = 0  # on referral + closing
    dst_fba_pct_x100: int = 0  # on the fulfilment fee
    fee_vat_pct_x100: int = 0  # TaxAmount on each fee (a seller not VAT-registered)
    dst_inside_fba: bool = False  # the FBA share of the DST inside FBAFees' included fees
    per_item_minor: int = 0  # PerItemFee: the Individual selling plan's


@dataclass
class Call:
    path: str
    status: int
    at: float
    items: int = 0
    program: tuple[str, ...] = ()


@dataclass
class _Bucket:
    rate: float
    burst: int
    tokens: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = float(self.burst)

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(float(self.burst), self.tokens + (now - self.at) * self.rate)
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


def _money(minor: int, currency: str) -> dict[str, Any]:
    return {"CurrencyCode": currency, "Amount": minor / 100}


def _minor(money: Any) -> int:
    return round(float(money["Amount"]) * 100)


class SpApiStandIn:
    def __init__(
        self,
        book: dict[tuple[str, str, str], BookEntry],
        *,
        client_id: str = "amzn1.application-oa2-client.standin",
        client_secret: str = "standin-client-secret-0123456789",
        refresh_token: str = "Atzr|standin-refresh-token-0123456789",
        rate: float = 0.5,
        burst: int = 1,
        advertise_rate: bool = True,
        advertised_rate: float | None = None,  # the header's value (default: the bucket's)
        token_lifetime_s: float = 3600.0,
    ) -> None:
        self.book = book  # keyed by (ASIN, our market code, programme)
        self.client_id, self.client_secret, self.refresh_token = (
            client_id,
            client_secret,
            refresh_token,
        )
        self.bucket = _Bucket(rate, burst)
        self.advertise_rate = advertise_rate
        self.advertised_rate = rate if advertised_rate is None else advertised_rate
        self.token_lifetime_s = token_lifetime_s
        self.calls: list[Call] = []
        self.tokens: dict[str, float] = {}  # access token → expiry (monotonic)
        self.service_errors: set[str] = set()  # identifiers answered ServiceError once
        self.scripted: deque[int] = deque()  # statuses the next fee requests get (500, 503)
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # --- what tests steer ----------------------------------------------------------------

    def expire_tokens(self) -> None:
        with self._lock:
            self.tokens = dict.fromkeys(self.tokens, 0.0)

    def fail_next(self, *statuses: int) -> None:
        self.scripted.extend(statuses)

    def calls_to(self, path: str) -> list[Call]:
        return [c for c in self.calls if c.path == path]

    @property
    def url(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def lwa_url(self) -> str:
        return self.url + LWA_PATH

    # --- serving -------------------------------------------------------------------------

    def start(self) -> SpApiStandIn:
        if self._httpd is not None:  # started already (``with server, client(server.start())``)
            return self
        handler = type("SpApiHandler", (_Handler,), {"stand_in": self})
        picks = random.Random()
        for _ in range(50):
            try:
                self._httpd = ThreadingHTTPServer(
                    ("127.0.0.1", picks.randrange(20_000, 32_000)), handler
                )
                break
            except OSError:
                continue
        else:
            raise RuntimeError("no free port below 32768 for the SP-API stand-in")
        self._httpd.daemon_threads = True
        threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> SpApiStandIn:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- the two endpoints ---------------------------------------------------------------

    def token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description": "grant_type"}
        if (form.get("client_id"), form.get("client_secret")) != (
            self.client_id,
            self.client_secret,
        ):
            return 401, {
                "error": "invalid_client",
                "error_description": "Client authentication failed",
            }
        if form.get("refresh_token") != self.refresh_token:
            return 400, {
                "error": "invalid_grant",
                "error_description": "The request has an invalid grant parameter : refresh_token",
            }
        access = "Atza|" + secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[access] = time.monotonic() + self.token_lifetime_s
        return 200, {
            "access_token": access,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": int(self.token_lifetime_s) if self.token_lifetime_s >= 1 else 1,
        }

    def fees(self, token: str | None, body: Any) -> tuple[int, Any]:
        with self._lock:
            expiry = self.tokens.get(token or "")
        if expiry is None:
            return 403, {"errors": [DENIED]}
        if time.monotonic() >= expiry:
            return 403, {"errors": [EXPIRED]}
        with self._lock:
            if not self.bucket.take():
                return 429, {"errors": [QUOTA]}
            if self.scripted:
                status = self.scripted.popleft()
                if status == 400:
                    return 400, {"errors": [{"code": "InvalidInput", "message": "Invalid Input"}]}
                return status, {"errors": [{"code": "InternalFailure", "message": "scripted"}]}
        if not isinstance(body, list) or not body or len(body) > 20:
            return 400, {
                "errors": [
                    {"code": "InvalidInput", "message": "Invalid Input", "details": "1 to 20 items"}
                ]
            }
        results = []
        for item in body:
            request = (item or {}).get("FeesEstimateRequest") or {}
            market = MARKET_BY_AMAZON_ID.get(str(request.get("MarketplaceId")))
            if market is None:
                return 400, {
                    "errors": [
                        {"code": "InvalidInput", "message": "Incorrect Marketplace identifier."}
                    ]
                }
            results.append(self._result(item, request, market.code, market.currency))
        return 200, results

    def _result(
        self, item: dict[str, Any], request: dict[str, Any], market: str, currency: str
    ) -> dict[str, Any]:
        program = request.get("OptionalFulfillmentProgram") or "FBA_CORE"
        identifier = {
            "MarketplaceId": request["MarketplaceId"],
            "IdType": item.get("IdType"),
            "SellerId": SELLER_ID,
            "SellerInputIdentifier": request.get("Identifier"),
            "IsAmazonFulfilled": bool(request.get("IsAmazonFulfilled")),
            "IdValue": item.get("IdValue"),
            "PriceToEstimateFees": request.get("PriceToEstimateFees"),
            "OptionalFulfillmentProgram": program,
        }
        key = (str(item.get("IdValue")), market, program)
        with self._lock:
            fail_once = request.get("Identifier") in self.service_errors
            self.service_errors.discard(request.get("Identifier"))
        if fail_once:
            return {
                "Status": "ServiceError",
                "FeesEstimateIdentifier": identifier,
                "Error": SERVICE_ERROR,
            }
        entry = self.book.get(key)
        if entry is None:
            return {
                "Status": "ClientError",
                "FeesEstimateIdentifier": identifier,
                "Error": CLIENT_ERROR,
            }
        price = _minor(request["PriceToEstimateFees"]["ListingPrice"])
        referral = max(
            round_half_even(price * entry.referral_pct_x100, 10_000), entry.referral_min_minor
        )
        selling_dst = round_half_even(
            (referral + entry.closing_minor) * entry.dst_selling_pct_x100, 10_000
        )
        fba_dst = round_half_even(entry.fulfilment_minor * entry.dst_fba_pct_x100, 10_000)
        fees: list[dict[str, Any]] = []

        def fee(kind: str, amount: int, included: list[dict[str, Any]] | None = None) -> None:
            tax = round_half_even(amount * entry.fee_vat_pct_x100, 10_000)
            detail: dict[str, Any] = {
                "FeeType": kind,
                "FeeAmount": _money(amount, currency),
                "FeePromotion": _money(0, currency),
                "TaxAmount": _money(tax, currency),
                "FinalFee": _money(amount + tax, currency),
            }
            if included is not None:
                detail["IncludedFeeDetailList"] = included
            fees.append(detail)

        fee("ReferralFee", referral)
        fee("VariableClosingFee", entry.closing_minor)
        if entry.per_item_minor:
            fee("PerItemFee", entry.per_item_minor)
        fulfilment = entry.fulfilment_minor
        included = [
            {
                "FeeType": "FBAPerUnitFulfillmentFee",
                "FeeAmount": _money(fulfilment, currency),
                "FinalFee": _money(fulfilment, currency),
            }
        ]
        if entry.dst_inside_fba:
            included.append(
                {
                    "FeeType": "DigitalServicesFee",
                    "FeeAmount": _money(fba_dst, currency),
                    "FinalFee": _money(fba_dst, currency),
                }
            )
            fee("FBAFees", fulfilment + fba_dst, included)
            fee("DigitalServicesFee", selling_dst)
        else:
            fee("FBAFees", fulfilment, included)
            fee("DigitalServicesFee", selling_dst + fba_dst)
        total = sum(_minor(f["FinalFee"]) for f in fees)
        return {
            "Status": "Success",
            "FeesEstimateIdentifier": identifier,
            "FeesEstimate": {
                "TimeOfFeesEstimation": datetime.now(UTC).strftime("%a %b %d %H:%M:%S UTC %Y"),
                "TotalFeesEstimate": _money(total, currency),
                "FeeDetailList": fees,
            },
            "Error": {"Type": "", "Code": "", "Message": "", "Detail": []},
        }


class _Handler(BaseHTTPRequestHandler):
    stand_in: SpApiStandIn

    def log_message(self, *_: Any) -> None:  # quiet tests
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        stand_in = self.stand_in
        items, programs = 0, ()
        if self.path == LWA_PATH:
            form = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
            status, body = stand_in.token(form)
        elif self.path == FEES_PATH:
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                items = len(parsed)
                programs = tuple(
                    (i.get("FeesEstimateRequest") or {}).get("OptionalFulfillmentProgram", "")
                    for i in parsed
                    if isinstance(i, dict)
                )
            status, body = stand_in.fees(self.headers.get("x-amz-access-token"), parsed)
        else:
            status, body = 404, {"errors": [{"code": "NotFound", "message": "no such resource"}]}
        stand_in.calls.append(Call(self.path, status, time.monotonic(), items, programs))
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.send_header("x-amzn-RequestId", secrets.token_hex(8))
        if self.path == FEES_PATH and stand_in.advertise_rate and status != 429:
            self.send_header("x-amzn-RateLimit-Limit", f"{stand_in.advertised_rate:g}")
        self.end_headers()
        self.wfile.write(payload)
