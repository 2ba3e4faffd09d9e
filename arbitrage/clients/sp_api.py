"""Amazon's Selling Partner API, the part the fee check needs: Login with Amazon (LWA) access
tokens from a refresh token, and ``getMyFeesEstimates`` (POST /products/fees/v0/feesEstimate)
in batches of 20, paced by the operation's usage plan and retried on throttling.

Credentials come from the environment only (``SpApiCredentials.from_env``) and never appear in
an error, a log line or a report: every message the client raises has them scrubbed.

Pacing: a token bucket at Amazon's documented default (0.5 requests/s, burst 1), moved to the
rate each answer's ``x-amzn-RateLimit-Limit`` header gives when it gives one. A 429, 500 or 503
is retried after a growing wait (at least one request interval), up to ``max_attempts``; an
access token Amazon calls expired is refreshed once and the request repeated.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests

from arbitrage.domain.redaction import redact_url, secure_endpoint_problem
from arbitrage.domain.sp_api_fees import (
    DEFAULT_BURST,
    DEFAULT_RATE_PER_S,
    MAX_ITEMS_PER_REQUEST,
    AmazonFees,
    EstimateRequest,
    FeesAnswerError,
    error_summary,
    parse_batch_answer,
    request_item,
)

log = logging.getLogger(__name__)

CLIENT_ID_ENV = "SP_API_LWA_CLIENT_ID"
CLIENT_SECRET_ENV = "SP_API_LWA_CLIENT_SECRET"
REFRESH_TOKEN_ENV = "SP_API_REFRESH_TOKEN"
CREDENTIAL_ENVS = (CLIENT_ID_ENV, CLIENT_SECRET_ENV, REFRESH_TOKEN_ENV)
DEFAULT_SP_API_URL = "https://sellingpartnerapi-eu.amazon.com"  # the Europe region's endpoint
DEFAULT_LWA_URL = "https://api.amazon.com/auth/o2/token"
FEES_ESTIMATE_PATH = "/products/fees/v0/feesEstimate"
RATE_LIMIT_HEADER = "x-amzn-RateLimit-Limit"
REQUEST_ID_HEADER = "x-amzn-RequestId"
USER_AGENT = "arbitrage/1.0 (Language=Python)"  # SP-API asks for "AppName/Version (Language=…)"
_RETRIED = {429, 500, 503}
_SCRUBBED = "***"


class SpApiError(RuntimeError):
    """The API could not give the estimates: unreachable, throttled past the retries, refused."""


class SpApiAuthError(SpApiError):
    """No access token: credentials missing, or LWA or the API refused them."""


@dataclass(frozen=True)
class SpApiCredentials:
    client_id: str
    client_secret: str
    refresh_token: str

    def __repr__(self) -> str:  # never the values, even in a traceback's locals
        return "SpApiCredentials(***)"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> SpApiCredentials:
        env = os.environ if env is None else env
        missing = [name for name in CREDENTIAL_ENVS if not env.get(name, "").strip()]
        if missing:
            raise SpApiAuthError(
                f"set {', '.join(missing)} (the seller's LWA app and refresh token; "
                "docs/configuration.md, Amazon SP-API)"
            )
        return cls(*(env[name].strip() for name in CREDENTIAL_ENVS))

    def scrub(self, text: str) -> str:
        for secret in (self.client_secret, self.refresh_token, self.client_id):
            text = text.replace(secret, _SCRUBBED)
        return text


class TokenBucket:
    """Requests paced at ``rate`` per second with ``burst`` at once (SP-API's usage plans)."""

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._tokens, self._at = float(burst), clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now

    def acquire(self) -> float:
        """Take one request's token, waiting for it; returns the seconds waited."""
        self._refill()
        waited = 0.0
        if self._tokens < 1:
            waited = (1 - self._tokens) / self.rate
            self._sleep(waited)
            self._refill()
            self._tokens = max(self._tokens, 1.0)
        self._tokens -= 1
        return waited

    def drain(self) -> None:
        """After a 429: the server's bucket is empty, so ours is too."""
        self._refill()
        self._tokens = min(self._tokens, 0.0)

    def set_rate(self, rate: float) -> None:
        if rate > 0 and rate != self.rate:
            self._refill()
            self.rate = rate


@dataclass
class FeesClientStats:
    requests: int = 0
    throttled: int = 0
    retried_server_errors: int = 0
    token_refreshes: int = 0
    waited_s: float = 0.0


class SpApiFeesClient:
    def __init__(
        self,
        credentials: SpApiCredentials,
        base_url: str = DEFAULT_SP_API_URL,
        lwa_url: str = DEFAULT_LWA_URL,
        *,
        max_attempts: int = 6,
        timeout_s: float = 30.0,
        backoff_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        for name, url in (("SP_API_URL", base_url), ("SP_API_LWA_URL", lwa_url)):
            problem = secure_endpoint_problem(url)
            if problem is not None:
                raise SpApiError(f"{name}={redact_url(url)!r} {problem}")
        self._credentials = credentials
        self.base_url, self.lwa_url = base_url.rstrip("/"), lwa_url
        self.max_attempts, self.timeout_s, self.backoff_s = max_attempts, timeout_s, backoff_s
        self._clock, self._sleep = clock, sleep
        self.bucket = TokenBucket(DEFAULT_RATE_PER_S, DEFAULT_BURST, clock, sleep)
        self.stats = FeesClientStats()
        self._session = requests.Session()
        self._token: str | None = None
        self._token_expires_at = 0.0

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> SpApiFeesClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- Login with Amazon -------------------------------------------------------------------

    def access_token(self, force: bool = False) -> str:
        """A valid LWA access token: the cached one until shortly before it expires."""
        if not force and self._token is not None and self._clock() < self._token_expires_at:
            return self._token
        form = {
            "grant_type": "refresh_token",
            "refresh_token": self._credentials.refresh_token,
            "client_id": self._credentials.client_id,
            "client_secret": self._credentials.client_secret,
        }
        try:
            answer = self._session.post(self.lwa_url, data=form, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SpApiAuthError(
                f"Login with Amazon at {redact_url(self.lwa_url)} unreachable: "
                f"{self._credentials.scrub(type(exc).__name__)}"
            ) from None
        body = _json(answer)
        if answer.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
            why = None
            if isinstance(body, dict):
                why = body.get("error_description") or body.get("error")
            raise SpApiAuthError(
                f"Login with Amazon refused the refresh token (HTTP {answer.status_code}"
                + (f": {self._credentials.scrub(str(why))[:200]}" if why else "")
                + f"); check {', '.join(CREDENTIAL_ENVS)}"
            )
        try:
            expires_in = max(1.0, float(body.get("expires_in") or 3600))
        except (TypeError, ValueError):
            expires_in = 3600.0  # LWA's documented lifetime: an hour
        # Refresh a minute early (half the lifetime for a short-lived one): a token that
        # expires in flight costs a retry.
        self._token = str(body["access_token"])
        self._token_expires_at = self._clock() + expires_in - min(60.0, expires_in / 2)
        self.stats.token_refreshes += 1
        return self._token

    # --- getMyFeesEstimates ------------------------------------------------------------------

    def estimate(
        self,
        asked: Sequence[EstimateRequest],
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, AmazonFees]:
        """Amazon's estimate for each request, by its identifier. An item Amazon answers with
        a ServiceError is asked once more in a later batch; what still fails keeps its error."""
        unique = list(dict.fromkeys(asked))
        answers: dict[str, AmazonFees] = {}
        pending, retry = unique, []
        for round_ in range(2):
            for start in range(0, len(pending), MAX_ITEMS_PER_REQUEST):
                batch = pending[start : start + MAX_ITEMS_PER_REQUEST]
                for request, fees in zip(batch, self._batch(batch), strict=True):
                    answers[request.identifier] = fees
                    if round_ == 0 and fees.status == "ServiceError":
                        retry.append(request)
                if progress is not None:
                    progress(len(answers), len(unique))
            pending, retry = retry, []
        return answers

    def _batch(self, batch: Sequence[EstimateRequest]) -> list[AmazonFees]:
        items = [request_item(r) for r in batch]
        refreshed = False
        for attempt in range(1, self.max_attempts + 1):
            self.stats.waited_s += self.bucket.acquire()
            headers = {
                "x-amz-access-token": self.access_token(),
                "content-type": "application/json",
                "user-agent": USER_AGENT,
            }
            try:
                answer = self._session.post(
                    self.base_url + FEES_ESTIMATE_PATH,
                    json=items,
                    headers=headers,
                    timeout=self.timeout_s,
                )
            except requests.RequestException as exc:
                if attempt == self.max_attempts:
                    raise SpApiError(
                        f"SP-API at {redact_url(self.base_url)} unreachable after {attempt} "
                        f"attempts ({type(exc).__name__})"
                    ) from None
                self._back_off(attempt)
                continue
            self.stats.requests += 1
            self._follow_rate_limit(answer)
            body = _json(answer)
            status = answer.status_code
            if status == 200:
                try:
                    return parse_batch_answer(body, [r.identifier for r in batch])
                except FeesAnswerError as exc:
                    raise SpApiError(
                        f"getMyFeesEstimates answered out of its model: {exc}"
                    ) from None
            summary = self._credentials.scrub(error_summary(body))
            if status in (401, 403) and not refreshed:
                # "Expired Token" among 403's reasons in the model: refresh once and repeat.
                refreshed = True
                self.access_token(force=True)
                continue
            if status in (401, 403):
                raise SpApiAuthError(f"SP-API refused the access token (HTTP {status}: {summary})")
            if status == 400:
                # The request itself was refused (an item Amazon cannot parse): each of its
                # items carries the reason, the next batch goes on.
                return [
                    AmazonFees(r.identifier, "ClientError", error=f"HTTP 400: {summary}")
                    for r in batch
                ]
            if status in _RETRIED and attempt < self.max_attempts:
                if status == 429:
                    self.stats.throttled += 1
                    self.bucket.drain()
                else:
                    self.stats.retried_server_errors += 1
                self._back_off(attempt)
                continue
            request_id = answer.headers.get(REQUEST_ID_HEADER, "-")
            raise SpApiError(
                f"getMyFeesEstimates: HTTP {status} after {attempt} attempts "
                f"(x-amzn-RequestId {request_id}): {summary}"
            )
        raise SpApiError("getMyFeesEstimates: no attempt left")  # unreachable: the loop returns

    def _follow_rate_limit(self, answer: requests.Response) -> None:
        value = answer.headers.get(RATE_LIMIT_HEADER)
        if value:
            try:
                self.bucket.set_rate(float(value))
            except ValueError:
                log.warning("ignored a %s header that is not a number", RATE_LIMIT_HEADER)

    def _back_off(self, attempt: int) -> None:
        # On top of the bucket's own interval (drained after a 429): 1, 2, 4 … × backoff_s.
        wait = self.backoff_s * 2 ** (attempt - 1)
        self.stats.waited_s += wait
        self._sleep(wait)


def _json(answer: requests.Response) -> Any:
    try:
        return answer.json()
    except ValueError:
        return None
