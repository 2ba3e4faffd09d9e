"""Enrichment of raw updates, and the stages' pure batch functions (poison records → rejected)."""

from __future__ import annotations

import json

import pytest

from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.lifecycle import apply_batch
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.timestamps import epoch_ms
from arbitrage.domain.messages.types import SchemaError
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.rules_config import NO_RULES
from arbitrage.domain.transforms import SourceRecord, arbitrage_records, enrich_records
from tests.factories import enriched, offer, raw_update

CONFIG = load_fee_config()
# The stage's clock in these tests: the factories' pull time, 2026-11-26T10:00:00Z.
NOW_MS = epoch_ms("2026-11-26T10:00:00.000Z")


def test_buy_sell_prices_and_spread() -> None:
    product = enriched(
        CONFIG,
        markets={
            "DE": offer("DE", amazon=4999, new=4500, buy_box=5100),
            "FR": offer("FR", buy_box=8000, new=7900),
            "GB": offer("GB", amazon=-2, new=3000, buy_box=-1),
        },
    )
    de, fr, gb = (product["markets"][m] for m in ("DE", "FR", "GB"))
    assert (de["buy_price"], de["sell_price"]) == (4500, 5100)
    assert (fr["buy_price"], fr["sell_price"]) == (7900, 8000)
    assert (gb["buy_price"], gb["sell_price"]) == (3000, 3000)
    assert gb["buy_price_eur_cents"] == 3435  # 3000 p × 1.145
    assert product["cheapest_market"] == "GB"
    assert product["dearest_market"] == "FR"
    assert product["spread_eur_cents"] == 8000 - 3435
    assert de["vat_pct_x100"] == 1900 and gb["fx_eur_per_unit"] == "1.145"


def test_enrichment_is_deterministic() -> None:
    raw = validate_raw_update(raw_update())
    assert encode(enriched(CONFIG)) == encode(enriched(CONFIG))
    assert "enriched_at" not in enriched(CONFIG)
    assert raw["timestamp"] == "2026-11-26T10:00:00.000Z"


def record(value: bytes | None, offset: int, key: bytes | None = b"B000TEST01") -> SourceRecord:
    return SourceRecord("raw.keepa_updates", 0, offset, key, value, 0)


def test_poison_records_are_rejected_and_the_rest_goes_on() -> None:
    good = json.dumps(raw_update()).encode()
    records = [
        record(b"{oops", 0),
        record(good, 1),
        record(json.dumps(raw_update(asin="B000TEST02")).encode(), 2, key=b"B000TEST99"),
        record(good, 3),
        record(good, 4, key=None),
    ]
    batch = enrich_records(records, CONFIG, NOW_MS)
    assert [r.offset for r, _ in batch.products] == [1, 3]
    assert {r.record.offset: r.reason for r in batch.rejected} == {
        0: "the raw update message is not valid JSON (unexpected character, expected a string key "
        "at character 1)",
        2: "the message key 'B000TEST99' differs from its asin 'B000TEST02'; keys must be the ASIN",
        4: "the message has no key; keys must be the ASIN ('B000TEST01')",
    }


def test_the_same_product_twice_in_a_batch_opens_its_opportunity_once() -> None:
    product = enriched(CONFIG)
    value = encode(product)
    records = [
        SourceRecord("products.enriched", 0, 0, b"B000TEST01", value, 0),
        SourceRecord("products.enriched", 0, 1, b"B000TEST01", value, 0),
        SourceRecord("products.enriched", 0, 2, b"B000TEST01", b"null", 0),
    ]
    batch = arbitrage_records(records, CONFIG, NO_RULES, "2026-11-26T10:00:05.000Z")
    events = apply_batch(batch.routes, {}, NO_RULES.lifecycle).events
    assert len(events) == 1
    assert events[0]["event"] == "opened" and events[0]["buy_market"] == "DE"
    assert [r.record.offset for r in batch.rejected] == [2]


def test_pull_times_are_bounded_before_they_become_document_versions() -> None:
    """A pull time is the document's external version: before 2011 (a pre-1970 one would be a
    negative version failing the whole bulk) or over 10 minutes ahead → DLQ, with a reason."""

    def stamped(at: str, offset: int) -> SourceRecord:
        return record(json.dumps(raw_update(timestamp=at)).encode(), offset)

    records = [
        stamped("1969-12-31T23:59:59Z", 0),
        stamped("0001-01-01T00:00:00Z", 1),
        stamped("2010-12-31T23:59:59.999Z", 2),
        stamped("2011-01-01T00:00:00.000Z", 3),
        stamped("2026-11-26T10:10:00.000Z", 4),  # exactly 10 minutes ahead: still allowed
        stamped("2026-11-26T10:10:00.001Z", 5),
        stamped("2026-11-26T11:00:00.000Z", 6),
        stamped("9999-12-31T23:59:59.999Z", 7),
    ]
    batch = enrich_records(records, CONFIG, NOW_MS)
    assert [r.offset for r, _ in batch.products] == [3, 4]
    reasons = {r.record.offset: r.reason for r in batch.rejected}
    assert sorted(reasons) == [0, 1, 2, 5, 6, 7]
    for offset in (0, 1, 2):
        assert "a pull time on or after 2011-01-01 (Keepa's epoch)" in reasons[offset]
    assert reasons[6].startswith(
        "field 'timestamp' is 2026-11-26T11:00:00.000Z, 60 minutes ahead of this stage's clock"
    )
    # The careful checks name the same rule the fast path enforces.
    with pytest.raises(SchemaError, match="on or after 2011-01-01"):
        validate_raw_update(raw_update(timestamp="1969-12-31T23:59:59Z"))
