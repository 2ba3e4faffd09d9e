"""Strict parsing of every message kind; each rule's message says what to fix."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from arbitrage.domain import topics
from arbitrage.domain.fee_config import FeeConfigError, load_fee_config
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.dlq import dlq_envelope
from arbitrage.domain.messages.fast_validation import fast_raw_update
from arbitrage.domain.messages.types import (
    DLQ_VALUE_KEPT_BYTES,
    DLQ_VALUE_WHOLE_MAX_BYTES,
    MAX_RECORD_BYTES,
    SchemaError,
)
from arbitrage.domain.messages.validation import (
    _checked_raw_update,
    parse_enriched_product,
    parse_raw_update,
)
from tests.factories import enriched, offer, raw_update


def as_bytes(message: dict) -> bytes:
    return json.dumps(message).encode()


def test_a_valid_raw_update_round_trips() -> None:
    message = raw_update()
    parsed = parse_raw_update(as_bytes(message))
    assert parsed["asin"] == "B000TEST01"
    assert parsed["markets"]["DE"]["new"] == 4500
    assert parse_raw_update(encode(parsed)) == parsed


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda m: m.update(asin="b000test01"), "field 'asin' must be an ASIN"),
        (lambda m: m.update(asin="B000TEST0"), "field 'asin' must be an ASIN"),
        (lambda m: m.update(asin="B000TEST01\n"), "field 'asin' must be an ASIN"),
        (lambda m: m.pop("asin"), "field 'asin' is missing"),
        (lambda m: m.update(schema_version=2), "schema_version 2, but this stage reads version 1"),
        (lambda m: m.pop("schema_version"), "field 'schema_version' is missing"),
        (lambda m: m["markets"]["DE"].update(new=-5), "'markets.DE.new' must be a price ≥ -2"),
        (
            lambda m: m["markets"]["DE"].update(new="45.00"),
            "'markets.DE.new' must be an integer price",
        ),
        (
            lambda m: m["markets"]["DE"].update(new=45.5),
            "'markets.DE.new' must be an integer price",
        ),
        (
            lambda m: m["markets"]["DE"].update(new=True),
            "'markets.DE.new' must be an integer price",
        ),
        (lambda m: m["markets"]["DE"].update(amazon=10**9), "a plausible price"),
        (lambda m: m["markets"].update(US=offer("DE")), "unknown marketplace 'US'"),
        (
            lambda m: m["markets"]["DE"].update(currency="GBP"),
            "'markets.DE.currency' must be 'EUR'",
        ),
        (lambda m: m["markets"]["FR"].update(domain_id=3), "'markets.FR.domain_id' must be 4"),
        (lambda m: m.update(markets={}), "'markets' must be a non-empty object"),
        (lambda m: m.update(timestamp="2026-11-26 10:00"), "'timestamp' must be an ISO-8601 UTC"),
        (
            lambda m: m.update(timestamp="2026-11-26T10:00:00+02:00"),
            "'timestamp' must be an ISO-8601 UTC",
        ),
        (lambda m: m.update(source="scraper"), "'source' must be 'keepa' or 'sample'"),
        (lambda m: m.update(title="x" * 3000), "'title' is 3000 characters long"),
        (
            lambda m: m["markets"]["DE"].update(referral_fee_pct=150),
            "a percentage between 0 and 100",
        ),
        (lambda m: m["package"].update(weight_g=-1), "'package.weight_g' must be grams"),
    ],
)
def test_each_rule_rejects_with_a_useful_sentence(mutate, expected: str) -> None:
    message = raw_update()
    mutate(message)
    with pytest.raises(SchemaError, match=None) as caught:
        parse_raw_update(as_bytes(message))
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"{not json", "is not valid JSON"),
        (b"[1, 2]", "must be a JSON object, but it is a list"),
        (b"\xff\xfe", "not UTF-8"),
        (None, "has no value (a tombstone)"),
        (b"{" + b" " * (MAX_RECORD_BYTES + 1) + b"}", f"the limit is {MAX_RECORD_BYTES} bytes"),
    ],
)
def test_undecodable_payloads(payload: bytes | None, expected: str) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_raw_update(payload)
    assert expected in str(caught.value)


def test_enriched_product_parsing_checks_what_the_fee_model_needs() -> None:
    config = load_fee_config()
    product = enriched(config)
    assert parse_enriched_product(encode(product))["asin"] == product["asin"]
    product["markets"]["DE"]["buy_price"] = -3
    with pytest.raises(SchemaError, match=r"markets\.DE\.buy_price"):
        parse_enriched_product(encode(product))
    product = enriched(config)
    product["schema_version"] = 0
    with pytest.raises(SchemaError, match="schema_version 0"):
        parse_enriched_product(encode(product))


def test_dlq_envelope_keeps_the_original_bytes() -> None:
    envelope = dlq_envelope(
        source_topic="raw.keepa_updates",
        partition=2,
        offset=41,
        key=b"B000TEST01",
        value=b"\x00garbage",
        stage="enrichment",
        error="the raw update message is not UTF-8 text",
    )
    assert base64.b64decode(envelope["value"]) == b"\x00garbage"
    assert envelope["value_bytes"] == 8
    assert envelope["key"] == "B000TEST01"
    assert envelope["failed_at"].endswith("Z")
    assert envelope["value_sha256"] == hashlib.sha256(b"\x00garbage").hexdigest()
    assert not envelope["value_truncated"] and not envelope["key_truncated"]


@pytest.mark.parametrize("size_mib", [4, 6.3, 7.9])
def test_dlq_envelope_of_any_original_fits_the_dlq_topic(size_mib: float) -> None:
    """Up to 4 MiB kept whole; beyond, the first 64 KiB plus length and SHA-256 of the whole."""
    original = os.urandom(int(size_mib * 1024 * 1024))
    key = b"K" * 5000
    envelope = dlq_envelope(
        source_topic="raw.keepa_updates",
        partition=1,
        offset=7,
        key=key,
        value=original,
        stage="enrichment",
        error="the raw update message is too big",
    )
    assert len(encode(envelope)) < topics.TOPIC_MAX_MESSAGE_BYTES - 64 * 1024
    kept = base64.b64decode(envelope["value"])
    truncated = len(original) > DLQ_VALUE_WHOLE_MAX_BYTES
    assert envelope["value_truncated"] == truncated
    assert kept == (original[:DLQ_VALUE_KEPT_BYTES] if truncated else original)
    assert envelope["value_bytes"] == len(original)
    assert envelope["value_sha256"] == hashlib.sha256(original).hexdigest()
    assert envelope["key"] == "K" * 1024 and envelope["key_truncated"]
    assert (envelope["source_topic"], envelope["partition"], envelope["offset"]) == (
        "raw.keepa_updates",
        1,
        7,
    )


def test_fee_config_errors_are_clear(tmp_path) -> None:
    with pytest.raises(FeeConfigError, match="does not exist"):
        load_fee_config(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("version = ")
    with pytest.raises(FeeConfigError, match="not valid TOML"):
        load_fee_config(broken)
    good = load_fee_config()
    text = Path(good.path).read_text()
    no_gbp = tmp_path / "no_gbp.toml"
    no_gbp.write_text(text.replace(', GBP = "1.1450"', ""))
    with pytest.raises(FeeConfigError, match="lacks GBP"):
        load_fee_config(no_gbp)
    too_precise = tmp_path / "precise.toml"
    too_precise.write_text(text.replace('"1.1450"', '"1.12345678"'))
    with pytest.raises(FeeConfigError, match="more than 6 decimal places"):
        load_fee_config(too_precise)


# The fast path of validate_raw_update must never accept what the careful checks reject, and
# must return exactly what they return.
ODD_VALUES = st.sampled_from(
    [None, True, -3, -2, -1, 0, 1, 10**9, 2.5, "", "x", "2026-11-26T10:00:00Z", [], {}, 15, 3]
)
FIELDS = [
    ("asin",),
    ("title",),
    ("domain_id",),
    ("timestamp",),
    ("source",),
    ("schema_version",),
    ("markets", "DE", "new"),
    ("markets", "DE", "amazon"),
    ("markets", "DE", "buy_box"),
    ("markets", "DE", "currency"),
    ("markets", "DE", "domain_id"),
    ("markets", "DE", "sales_rank"),
    ("markets", "DE", "offer_count_new"),
    ("markets", "DE", "referral_fee_pct"),
    ("markets", "DE", "fba_fee"),
    ("markets", "DE", "root_category"),
    ("markets", "DE", "last_update"),
    ("markets", "DE", "signals"),
    ("markets", "DE", "signals", "new_avg90"),
    ("markets", "DE", "signals", "buy_box_is_fba"),
    ("markets", "DE", "signals", "sales_rank_drops30"),
    ("markets", "FR", "new"),
    ("current_prices", "DE"),
    ("package", "weight_g"),
    ("package",),
    ("category", "root_id"),
    ("category",),
    ("markets",),
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FIELDS), ODD_VALUES), max_size=3))
def test_fast_path_agrees_with_the_careful_checks(mutations) -> None:
    message = raw_update()
    for path, value in mutations:
        target = message
        for part in path[:-1]:
            target = target.setdefault(part, {}) if isinstance(target, dict) else {}
        if isinstance(target, dict):
            target[path[-1]] = value
    fast = fast_raw_update(copy.deepcopy(message))
    try:
        careful = _checked_raw_update(copy.deepcopy(message))
    except SchemaError:
        careful = None
    if fast is not None:
        assert fast == careful
    if not mutations:
        assert fast is not None  # the common case takes the fast path
