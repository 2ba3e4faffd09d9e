"""Amazon's Product Fees API in its own shapes (SP-API ``productFeesV0``, operation
``getMyFeesEstimates``, Amazon's published model: github.com/amzn/selling-partner-api-models,
models/product-fees-api-model/productFeesV0.json): the request items we send and the reading of
each ``FeesEstimateResult`` into the fee lines our model has (docs/fees.md, "Amazon's estimate
as the check").

Where the model is silent, the reading taken (decision 49):

- a line's amount is ``FeeAmount`` less ``FeePromotion``; ``TaxAmount`` (VAT on Amazon's fee)
  goes to ``fee_vat``, summed over the top-level fees only (the included ones are parts of them);
- ``ReferralFee`` → referral; ``VariableClosingFee`` / ``FixedClosingFee`` → closing fee;
  ``FBAFees`` → fulfilment; a fee type naming the digital services fee (``DigitalServicesFee``,
  on its own or inside another fee's ``IncludedFeeDetailList``) → DST, taken out of the fee that
  includes it; any other type (``PerItemFee``, the Individual plan's, among them) → ``other``,
  named in the report, never dropped;
- amounts are decimal numbers of the marketplace's currency, rounded half-even to minor units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from arbitrage.domain.markets import MARKET_BY_AMAZON_ID, MARKETPLACES

# getMyFeesEstimates takes "a list of products"; Amazon documents at most 20 per request.
MAX_ITEMS_PER_REQUEST = 20
# The operation's usage plan in the model: 0.5 requests per second, burst 1.
DEFAULT_RATE_PER_S = 0.5
DEFAULT_BURST = 1
FBA_CORE = "FBA_CORE"  # the marketplace's standard FBA fees (Amazon's default)
FBA_EFN = "FBA_EFN"  # cross-border European Fulfilment Network fees
PROGRAMS = (FBA_CORE, FBA_EFN)
SUCCESS = "Success"
MALFORMED = "Malformed"  # our status for a result Amazon's model would not produce

REFERRAL, CLOSING, FULFILMENT, DST, FEE_VAT, OTHER = (
    "referral_fee",
    "closing_fee",
    "fulfilment",
    "dst_fee",
    "fee_vat",
    "other",
)
AMAZON_LINES = (REFERRAL, CLOSING, FULFILMENT, DST, FEE_VAT, OTHER)
_LINE_OF_FEE_TYPE = {
    "ReferralFee": REFERRAL,
    "VariableClosingFee": CLOSING,
    "FixedClosingFee": CLOSING,
    "FBAFees": FULFILMENT,
}
_DST_TYPE = re.compile(r"DigitalServices", re.IGNORECASE)


@dataclass(frozen=True)
class EstimateRequest:
    """One fee estimate to ask for: an ASIN listed in a store at a price, fulfilled by Amazon
    under a programme. ``identifier`` comes back as ``SellerInputIdentifier``."""

    asin: str
    market: str  # our code: DE, FR, IT, ES, GB
    price_minor: int  # the listing price, VAT included, minor units of the store's currency
    program: str = FBA_CORE

    @property
    def identifier(self) -> str:
        return f"{self.asin}/{self.market}/{self.program}/{self.price_minor}"


def _money(amount_minor: int, currency: str) -> dict[str, Any]:
    # A JSON number with two decimals: both stores' currencies (EUR, GBP) have cents.
    return {"CurrencyCode": currency, "Amount": float(Decimal(amount_minor) / 100)}


def request_item(request: EstimateRequest) -> dict[str, Any]:
    """A ``FeesEstimateByIdRequest`` (IdType ASIN) of the model."""
    market = MARKETPLACES[request.market]
    return {
        "FeesEstimateRequest": {
            "MarketplaceId": market.amazon_marketplace_id,
            "IsAmazonFulfilled": True,
            "PriceToEstimateFees": {
                "ListingPrice": _money(request.price_minor, market.currency),
                "Shipping": _money(0, market.currency),
            },
            "Identifier": request.identifier,
            "OptionalFulfillmentProgram": request.program,
        },
        "IdType": "ASIN",
        "IdValue": request.asin,
    }


@dataclass(frozen=True)
class AmazonFees:
    """One ``FeesEstimateResult`` read: the lines in minor units of ``currency``, or an error."""

    identifier: str
    status: str  # Success | ClientError | ServiceError (or what Amazon said)
    currency: str | None = None
    lines_minor: Mapping[str, int] = field(default_factory=dict)
    total_minor: int | None = None
    error: str | None = None  # "Code: Message" when Status is not Success
    other_fee_types: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS and self.error is None


class FeesAnswerError(ValueError):
    """A result that does not have the model's shape (the whole answer is unusable)."""


def to_minor(money: Any) -> int:
    """A ``MoneyType``'s Amount in minor units, rounded half-even (0 when absent)."""
    if not isinstance(money, Mapping) or money.get("Amount") is None:
        return 0
    try:
        amount = Decimal(str(money["Amount"]))
    except InvalidOperation:
        raise FeesAnswerError(f"an Amount that is not a number: {money['Amount']!r:.40}") from None
    if not amount.is_finite():
        raise FeesAnswerError(f"an Amount that is not a number: {money['Amount']!r:.40}")
    return int((amount * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def _currencies(fee: Mapping[str, Any]) -> set[str]:
    return {
        str(fee[name]["CurrencyCode"])
        for name in ("FeeAmount", "FeePromotion", "TaxAmount", "FinalFee")
        if isinstance(fee.get(name), Mapping) and fee[name].get("CurrencyCode")
    }


def parse_result(result: Any) -> AmazonFees:
    """A ``FeesEstimateResult`` → ``AmazonFees``; raises ``FeesAnswerError`` on a broken shape."""
    if not isinstance(result, Mapping):
        raise FeesAnswerError("a FeesEstimateResult that is not an object")
    identifier_block = result.get("FeesEstimateIdentifier")
    if not isinstance(identifier_block, Mapping):
        identifier_block = {}
    identifier = str(identifier_block.get("SellerInputIdentifier") or "")
    status = str(result.get("Status") or "")
    error = result.get("Error")
    if not isinstance(error, Mapping):
        error = {}
    if status != SUCCESS:
        code, message = error.get("Code") or status or "no status", error.get("Message") or ""
        return AmazonFees(identifier, status or "no status", error=f"{code}: {message}".strip())
    estimate = result.get("FeesEstimate")
    if not isinstance(estimate, Mapping):
        raise FeesAnswerError(f"{identifier}: Status Success without a FeesEstimate")
    expected = MARKET_BY_AMAZON_ID.get(str(identifier_block.get("MarketplaceId") or ""))
    lines = dict.fromkeys(AMAZON_LINES, 0)
    others: list[str] = []
    currencies: set[str] = set()
    details = estimate.get("FeeDetailList") or []
    if not isinstance(details, list) or not all(isinstance(f, Mapping) for f in details):
        raise FeesAnswerError(f"{identifier}: a FeeDetailList that is not a list of fees")
    for fee in details:
        fee_type = str(fee.get("FeeType") or "")
        amount = to_minor(fee.get("FeeAmount")) - to_minor(fee.get("FeePromotion"))
        currencies |= _currencies(fee)
        lines[FEE_VAT] += to_minor(fee.get("TaxAmount"))
        included = fee.get("IncludedFeeDetailList") or []
        if not isinstance(included, list) or not all(isinstance(i, Mapping) for i in included):
            raise FeesAnswerError(f"{identifier}: {fee_type}'s included fees are not a list")
        for part in included:
            if _DST_TYPE.search(str(part.get("FeeType") or "")):
                share = to_minor(part.get("FeeAmount")) - to_minor(part.get("FeePromotion"))
                lines[DST] += share
                amount -= share
        if _DST_TYPE.search(fee_type):
            lines[DST] += amount
        elif fee_type in _LINE_OF_FEE_TYPE:
            lines[_LINE_OF_FEE_TYPE[fee_type]] += amount
        else:
            lines[OTHER] += amount
            others.append(fee_type or "(no FeeType)")
    total = estimate.get("TotalFeesEstimate")
    if isinstance(total, Mapping) and total.get("CurrencyCode"):
        currencies.add(str(total["CurrencyCode"]))
    if len(currencies) > 1:
        return AmazonFees(
            identifier, status, error=f"fees in several currencies: {sorted(currencies)}"
        )
    currency = next(iter(currencies), expected.currency if expected else None)
    if currency is None:
        return AmazonFees(identifier, status, error="no currency and no known MarketplaceId")
    if expected is not None and currency != expected.currency:
        return AmazonFees(
            identifier,
            status,
            error=f"fees in {currency}, the store {expected.code} sells in {expected.currency}",
        )
    return AmazonFees(
        identifier,
        status,
        currency=currency,
        lines_minor=lines,
        total_minor=to_minor(total) if isinstance(total, Mapping) else None,
        other_fee_types=tuple(others),
    )


def parse_batch_answer(body: Any, identifiers: Sequence[str]) -> list[AmazonFees]:
    """A 200 answer of getMyFeesEstimates, one ``AmazonFees`` per identifier asked, in order.

    Results are matched by their ``SellerInputIdentifier`` (the model does not promise the
    order), else by position; a result out of the model's shape is that item's error, never
    the batch's. Raises ``FeesAnswerError`` only when the answer is not an array.
    """
    if not isinstance(body, list):
        raise FeesAnswerError("the answer is not an array of FeesEstimateResult")
    read: list[AmazonFees | None] = []
    for result in body:
        try:
            read.append(parse_result(result))
        except FeesAnswerError as exc:
            read.append(AmazonFees("", MALFORMED, error=f"{MALFORMED}: {exc}"))
    by_identifier = {fees.identifier: fees for fees in read if fees and fees.identifier}
    answers = []
    for position, identifier in enumerate(identifiers):
        fees = by_identifier.get(identifier)
        if fees is None and position < len(read):
            found = read[position]
            if found is not None and found.identifier in ("", identifier):
                fees = replace(found, identifier=identifier)
        answers.append(fees or AmazonFees(identifier, MALFORMED, error="no result for this item"))
    return answers


def error_summary(body: Any) -> str:
    """The ``errors`` list of an error answer as one line (code: message; …)."""
    errors = body.get("errors") if isinstance(body, Mapping) else None
    if not isinstance(errors, list) or not errors:
        return "no error list in the answer"
    return "; ".join(
        f"{e.get('code', '?')}: {e.get('message', '')}".strip()
        + (f" ({e['details']})" if e.get("details") else "")
        for e in errors
        if isinstance(e, Mapping)
    )
