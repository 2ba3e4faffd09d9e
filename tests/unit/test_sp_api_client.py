"""The SP-API fees client against the stand-in built from Amazon's model (tests/sp_api_server.py):
estimates in batches of 20, partial errors, throttling, token expiry and refresh, LWA refusals,
credentials only from the environment and never in an error."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbitrage.clients.sp_api import (
    CREDENTIAL_ENVS,
    SpApiAuthError,
    SpApiCredentials,
    SpApiError,
    SpApiFeesClient,
    TokenBucket,
)
from arbitrage.domain.sp_api_fees import (
    AMAZON_LINES,
    DST,
    FBA_CORE,
    FBA_EFN,
    FEE_VAT,
    FULFILMENT,
    OTHER,
    REFERRAL,
    EstimateRequest,
    parse_batch_answer,
    parse_result,
)
from tests.sp_api_server import FEES_PATH, LWA_PATH, BookEntry, SpApiStandIn

ASINS = [f"B0STAND{n:03d}" for n in range(45)]
# Amazon's bucket far above the rate its header gives: the tests never meet a 429 by chance.
FAST = {"rate": 1000.0, "advertised_rate": 100.0}
ENTRY = BookEntry(
    referral_pct_x100=1500,
    referral_min_minor=30,
    closing_minor=0,
    fulfilment_minor=312,
    dst_selling_pct_x100=300,
    dst_fba_pct_x100=300,
)


def _book(asins: list[str] = ASINS) -> dict[tuple[str, str, str], BookEntry]:
    return {(a, m, p): ENTRY for a in asins for m in ("DE", "FR") for p in (FBA_CORE, FBA_EFN)}


def _credentials(server: SpApiStandIn) -> SpApiCredentials:
    return SpApiCredentials(server.client_id, server.client_secret, server.refresh_token)


def _client(server: SpApiStandIn, **options: object) -> SpApiFeesClient:
    return SpApiFeesClient(_credentials(server), server.url, server.lwa_url, **options)  # type: ignore[arg-type]


def _asked(asins: list[str], market: str = "FR", price: int = 2999) -> list[EstimateRequest]:
    return [EstimateRequest(a, market, price, FBA_CORE) for a in asins]


def test_estimates_come_in_batches_of_twenty_with_every_line_read() -> None:
    with SpApiStandIn(_book(), **FAST) as server, _client(server) as client:
        answers = client.estimate(_asked(ASINS))
    fees = server.calls_to(FEES_PATH)
    assert [(c.status, c.items) for c in fees] == [(200, 20), (200, 20), (200, 5)]
    assert len(server.calls_to(LWA_PATH)) == 1  # one access token for all three requests
    assert len(answers) == 45
    one = answers[_asked(ASINS[:1])[0].identifier]
    assert one.ok and one.currency == "EUR"
    # 15 % of 29.99 = 4.4985 → 4.50; FBA 3.12; DST 3 % of 4.50 and of 3.12 = 0.14 + 0.09.
    assert one.lines_minor[REFERRAL] == 450
    assert one.lines_minor[FULFILMENT] == 312
    assert one.lines_minor[DST] == 23
    assert one.lines_minor[FEE_VAT] == 0 and one.lines_minor[OTHER] == 0
    assert one.total_minor == 450 + 312 + 23
    # The client learnt the operation's rate from x-amzn-RateLimit-Limit.
    assert client.bucket.rate == FAST["advertised_rate"]


def test_a_batch_with_an_unknown_asin_answers_the_others() -> None:
    known = ASINS[:5]
    with SpApiStandIn(_book(known), **FAST) as server, _client(server) as client:
        answers = client.estimate(_asked([*known, "B0UNKNOWN1"]))
    assert [a.ok for a in answers.values()] == [True] * 5 + [False]
    bad = answers[_asked(["B0UNKNOWN1"])[0].identifier]
    assert bad.status == "ClientError"
    assert (
        bad.error
        == "InvalidParameterValue: There is an client-side error. Please verify your inputs."
    )


def test_a_service_error_item_is_asked_once_more() -> None:
    asked = _asked(ASINS[:3])
    with SpApiStandIn(_book(), **FAST) as server, _client(server) as client:
        server.service_errors.add(asked[1].identifier)
        answers = client.estimate(asked)
    assert all(a.ok for a in answers.values())
    assert [c.items for c in server.calls_to(FEES_PATH)] == [3, 1]


def test_throttled_requests_are_retried_until_they_pass() -> None:
    # Amazon's bucket is slower than the client believes (no header to learn from): 429s.
    server = SpApiStandIn(_book(), rate=4, burst=1, advertise_rate=False)
    with server, _client(server.start(), backoff_s=0.05) as client:
        client.bucket.set_rate(1000)
        answers = client.estimate(_asked(ASINS))
    statuses = [c.status for c in server.calls_to(FEES_PATH)]
    assert 429 in statuses
    assert statuses.count(200) == 3
    assert client.stats.throttled == statuses.count(429)
    assert len(answers) == 45 and all(a.ok for a in answers.values())


def test_throttling_past_the_attempts_fails_the_run() -> None:
    server = SpApiStandIn(_book(), rate=0.01, burst=1, advertise_rate=False)
    with server, _client(server.start(), backoff_s=0.01, max_attempts=3) as client:
        client.bucket.set_rate(1000)
        client.estimate(_asked(ASINS[:1]))  # the one token the bucket starts with
        with pytest.raises(SpApiError, match="HTTP 429 after 3 attempts"):
            client.estimate(_asked(ASINS[1:2]))


def test_server_errors_are_retried() -> None:
    with SpApiStandIn(_book(), **FAST) as server, _client(server, backoff_s=0.01) as client:
        server.fail_next(503, 500)
        answers = client.estimate(_asked(ASINS[:2]))
    assert [c.status for c in server.calls_to(FEES_PATH)] == [503, 500, 200]
    assert all(a.ok for a in answers.values())


def test_a_refused_batch_gives_each_item_the_reason_and_the_next_batch_goes_on() -> None:
    with SpApiStandIn(_book(), **FAST) as server, _client(server) as client:
        server.fail_next(400)
        answers = list(client.estimate(_asked(ASINS[:25])).values())
    assert [a.error for a in answers[:20]] == ["HTTP 400: InvalidInput: Invalid Input"] * 20
    assert all(a.ok for a in answers[20:])


def test_an_expired_access_token_is_refreshed_and_the_request_repeated() -> None:
    with SpApiStandIn(_book(), **FAST) as server, _client(server) as client:
        client.estimate(_asked(ASINS[:1]))
        server.expire_tokens()
        answers = client.estimate(_asked(ASINS[1:2]))
    assert [c.status for c in server.calls_to(FEES_PATH)] == [200, 403, 200]
    assert len(server.calls_to(LWA_PATH)) == 2
    assert all(a.ok for a in answers.values())


def test_a_token_near_its_expiry_is_renewed_before_it_is_used() -> None:
    with SpApiStandIn(_book(), **FAST, token_lifetime_s=1) as server, _client(server) as client:
        client.estimate(_asked(ASINS[:1]))
        time.sleep(0.6)  # past half of its one-second life: renewed without a 403
        client.estimate(_asked(ASINS[1:2]))
    assert [c.status for c in server.calls_to(FEES_PATH)] == [200, 200]
    assert len(server.calls_to(LWA_PATH)) == 2


def test_refused_credentials_fail_with_a_sentence_that_holds_no_secret() -> None:
    with SpApiStandIn(_book(), **FAST) as server:
        wrong = SpApiCredentials(server.client_id, server.client_secret, "Atzr|wrong-refresh-1234")
        client = SpApiFeesClient(wrong, server.url, server.lwa_url)
        with client, pytest.raises(SpApiAuthError) as refused:
            client.estimate(_asked(ASINS[:1]))
    message = str(refused.value)
    assert "invalid grant" in message and "SP_API_REFRESH_TOKEN" in message
    for secret in (wrong.refresh_token, wrong.client_secret):
        assert secret not in message
    assert "wrong-refresh" not in repr(wrong)


def test_credentials_come_from_the_environment_and_missing_ones_are_named() -> None:
    with pytest.raises(SpApiAuthError, match="SP_API_LWA_CLIENT_SECRET, SP_API_REFRESH_TOKEN"):
        SpApiCredentials.from_env({"SP_API_LWA_CLIENT_ID": "amzn1.application-oa2-client.x"})
    env = dict(zip(CREDENTIAL_ENVS, ("id", "secret", "refresh"), strict=True))
    assert SpApiCredentials.from_env(env) == SpApiCredentials("id", "secret", "refresh")


def test_a_plain_http_endpoint_off_this_machine_is_refused() -> None:
    with pytest.raises(SpApiError, match="SP_API_URL"):
        SpApiFeesClient(SpApiCredentials("i", "s", "r"), "http://sellingpartnerapi-eu.example")


def test_the_default_pace_is_the_operations_usage_plan() -> None:
    """0.5 requests per second, burst 1: the third request waits four seconds after the first."""
    now = [0.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    client = SpApiFeesClient(SpApiCredentials("i", "s", "r"), clock=lambda: now[0], sleep=sleep)
    bucket = client.bucket
    assert (bucket.rate, bucket.burst) == (0.5, 1)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 2.0, 2.0]
    assert now[0] == 4.0
    client.close()


def test_token_bucket_drain_after_a_throttle_waits_a_full_interval() -> None:
    now = [10.0]
    bucket = TokenBucket(
        2.0, 1, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s)
    )
    bucket.acquire()
    now[0] += 5  # refilled
    bucket.drain()
    assert bucket.acquire() == 0.5


def test_a_fee_inside_another_and_the_tax_are_read_as_amazon_lists_them() -> None:
    result = {
        "Status": "Success",
        "FeesEstimateIdentifier": {"MarketplaceId": "A1F83G8C2ARO7P", "SellerInputIdentifier": "x"},
        "FeesEstimate": {
            "TimeOfFeesEstimation": "Mon Dec 07 10:00:00 UTC 2026",
            "TotalFeesEstimate": {"CurrencyCode": "GBP", "Amount": 7.215},
            "FeeDetailList": [
                {
                    "FeeType": "ReferralFee",
                    "FeeAmount": {"CurrencyCode": "GBP", "Amount": 3.0},
                    "FeePromotion": {"CurrencyCode": "GBP", "Amount": 0.5},
                    "TaxAmount": {"CurrencyCode": "GBP", "Amount": 0.5},
                    "FinalFee": {"CurrencyCode": "GBP", "Amount": 3.0},
                },
                {
                    "FeeType": "FBAFees",
                    "FeeAmount": {"CurrencyCode": "GBP", "Amount": 3.06},
                    "FinalFee": {"CurrencyCode": "GBP", "Amount": 3.06},
                    "IncludedFeeDetailList": [
                        {"FeeType": "FBAPerUnitFulfillmentFee", "FeeAmount": {"Amount": 3.0}},
                        {"FeeType": "DigitalServicesFee", "FeeAmount": {"Amount": 0.06}},
                    ],
                },
                {"FeeType": "PerItemFee", "FeeAmount": {"CurrencyCode": "GBP", "Amount": 0.75}},
            ],
        },
    }
    fees = parse_result(result)
    assert fees.ok and fees.currency == "GBP"
    assert fees.lines_minor[REFERRAL] == 250  # 3.00 less its 0.50 promotion
    assert fees.lines_minor[FEE_VAT] == 50
    assert fees.lines_minor[FULFILMENT] == 300 and fees.lines_minor[DST] == 6
    assert fees.lines_minor[OTHER] == 75 and fees.other_fee_types == ("PerItemFee",)
    assert fees.total_minor == 722  # 7.215 half-even
    # Fees in another store's currency are not this store's estimate.
    result["FeesEstimate"]["TotalFeesEstimate"]["CurrencyCode"] = "EUR"
    assert parse_result(result).error is not None


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
KEYS = st.sampled_from(
    [
        "Status",
        "FeesEstimate",
        "FeeDetailList",
        "FeeType",
        "FeeAmount",
        "Amount",
        "Error",
        "FeesEstimateIdentifier",
        "SellerInputIdentifier",
        "IncludedFeeDetailList",
        "TaxAmount",
        "TotalFeesEstimate",
        "CurrencyCode",
        "MarketplaceId",
    ]
)
# Results that look like the model's: its keys with any values at any depth.
SHAPED = st.recursive(
    st.none()
    | st.booleans()
    | st.floats()
    | st.sampled_from(["Success", "EUR", "ReferralFee", "A13V1IB3VIYZZH", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=5),
    max_leaves=20,
)


@given(st.lists(JSON | SHAPED, max_size=5), st.integers(min_value=0, max_value=5))
@settings(max_examples=300, deadline=None)
def test_any_answer_gives_one_result_per_item_and_never_raises(body: list, asked: int) -> None:
    identifiers = [f"B0FUZZ{n:04d}/FR/FBA_CORE/100" for n in range(asked)]
    answers = parse_batch_answer(body, identifiers)
    assert [a.identifier for a in answers] == identifiers
    for answer in answers:
        assert answer.ok == (answer.error is None and answer.status == "Success")
        if answer.ok:
            assert set(answer.lines_minor) == set(AMAZON_LINES)


def test_results_are_matched_by_their_identifier_not_their_order() -> None:
    def result(identifier: str, referral: float) -> dict:
        return {
            "Status": "Success",
            "FeesEstimateIdentifier": {
                "MarketplaceId": "A13V1IB3VIYZZH",
                "SellerInputIdentifier": identifier,
            },
            "FeesEstimate": {
                "FeeDetailList": [
                    {
                        "FeeType": "ReferralFee",
                        "FeeAmount": {"CurrencyCode": "EUR", "Amount": referral},
                    }
                ]
            },
        }

    answers = parse_batch_answer([result("b", 2.0), result("a", 1.0), "junk"], ["a", "b", "c"])
    assert [a.lines_minor.get(REFERRAL) for a in answers] == [100, 200, None]
    assert answers[2].status == "Malformed"
