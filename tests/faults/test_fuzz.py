"""10 000 fuzzed raw records mixed with 10 000 good ones through the enrichment stage: every
good record is processed once, every bad one is dead-lettered once with a reason, nothing
stalls the partition.

What a fuzzed record should become is decided here, by construction (the oracle is not the
code under test): garbage of every kind must be dead-lettered; a well-formed update is good
exactly when its pull time is between Keepa's epoch (2011-01-01) and ten minutes from now.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import ENRICHMENT
from tests.factories import raw_update
from tests.faults.audit import audit_stage
from tests.integration.kafka_io import ReadMessage, produce
from tests.integration.test_stages import good_updates, run_job

pytestmark = [pytest.mark.integration, pytest.mark.faults]

GOOD = 10_000
FUZZED = 10_000
KEEPA_EPOCH = datetime(2011, 1, 1, tzinfo=UTC)
MiB = 1024 * 1024


def padded(size: int) -> bytes:
    return b'{"pad": "' + b"z" * size + b'"}'


def fuzzed(n: int, rng: random.Random) -> tuple[str | None, bytes, bool]:
    """The n-th fuzzed record: (key, value, whether it is a valid update)."""
    asin = f"B0FZ{n:06d}"
    kind = n % 10
    if kind == 0:
        return asin, rng.randbytes(rng.randint(0, 2000)), False
    if kind == 1:
        return asin, b'{"asin": "' + asin.encode() + b'", "title": "\xc3\x28\xff"}', False
    if kind == 2:
        depth = 100_000
        return asin, b"[" * depth + b"]" * depth, False
    if kind == 3:
        number = rng.choice([b"1e400", b"-1e400", b"NaN", b"Infinity", b"1" * 400])
        update = json.dumps(raw_update(asin=asin)).encode()
        return asin, update.replace(b'"weight_g": 400', b'"weight_g": ' + number), False
    if kind == 4:
        update = raw_update(asin=asin)
        field = rng.choice(["asin", "timestamp", "markets", "schema_version"])
        if rng.random() < 0.5:
            del update[field]
        else:
            update[field] = None
        return asin, json.dumps(update).encode(), False
    if kind == 5:
        # Key and body disagree, or no key at all.
        update = json.dumps(raw_update(asin=asin)).encode()
        return (None if rng.random() < 0.5 else f"B0OTHER{n:05d}"), update, False
    if kind in (6, 7):
        now = datetime.now(UTC)
        year = rng.choice([1, 1969, 1970, 2010, 2012, 2025, 2100, 9999, 0])
        if year:
            stamp = datetime(year, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC)
        else:  # around the 10-minute bound, 5 minutes clear of it either way
            stamp = now + timedelta(minutes=rng.choice([-60, 1, 5, 15, 120]))
        valid = KEEPA_EPOCH <= stamp <= now + timedelta(minutes=10)
        text = f"{stamp.year:04d}-{stamp:%m-%dT%H:%M:%S}.000Z"
        return asin, json.dumps(raw_update(asin=asin, timestamp=text)).encode(), valid
    if kind == 8 and n % 1000 == 8:
        # 6.3-8 MiB: over the 256 KiB limit, and too big for a DLQ envelope to hold whole.
        return asin, padded(rng.randint(int(6.3 * MiB), 8 * MiB - 4096)), False
    if kind == 8 and n % 100 == 18:
        return asin, padded(rng.randint(256 * 1024, 300 * 1024)), False
    if kind == 8:
        return asin, rng.choice([b"", b"null", b"[]", b"{}", b'"text"', b"0", b"{" * 7]), False
    return asin, b"", False


@pytest.mark.usefixtures("clean_pipeline")
def test_fuzzed_records_never_stall_the_stage(kafka: KafkaClient, es: ElasticsearchClient) -> None:
    rng = random.Random(20261128)
    good = good_updates(GOOD)
    items: list[tuple[str | None, bytes]] = [(u["asin"], json.dumps(u).encode()) for u in good]
    valid_fuzz: set[str] = set()
    for n in range(FUZZED):
        key, value, valid = fuzzed(n, rng)
        if valid:
            assert key is not None
            valid_fuzz.add(key)
        items.insert(rng.randint(0, len(items)), (key, value))
    for start in range(0, len(items), 2000):
        produce(kafka, topics.RAW_UPDATES, items[start : start + 2000])

    # About half of every batch is garbage on purpose: let the reject-rate breaker through.
    config = {"enrichment_stage": {"config": {"batch_size": 2000, "max_reject_ratio": 0.95}}}
    assert run_job("enrichment", {"ops": config}).success

    expected = {u["asin"]: u["asin"] for u in good} | {asin: asin for asin in valid_fuzz}

    def poison(message: ReadMessage) -> bool:
        return message.key not in expected

    audit = audit_stage(
        f"enrichment: {FUZZED} fuzzed records among {GOOD} good ones",
        ENRICHMENT,
        kafka,
        es,
        expected_outputs=expected,
        poison=poison,
        output_id="asin",
    )
    audit.assert_exactly_once()
