"""The token ledger (Elasticsearch ``keepa-ledger``): one document per Keepa request that was
answered, with its purpose (the pull's refresh, a discovery source, the own list), endpoint,
market, how many ASINs it asked or returned, Keepa's ``tokensConsumed`` and ``tokensLeft``,
and Keepa's time. Summed per hour and purpose it is what ``arbitrage tokens`` prints, and it
equals the account's own counter.

A run records its requests as they are answered and writes them in bulk every
``FLUSH_EVERY`` requests and when it ends, also when it fails: a request that spent tokens is
never left out of the ledger by a later error. Each document's id is the run's id and the
request's number in it, so writing a batch twice records it once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from arbitrage.clients.elasticsearch import BulkOp, ElasticsearchClient
from arbitrage.domain.keepa_parsing import TokenInfo
from arbitrage.domain.topics import KEEPA_LEDGER_INDEX

FLUSH_EVERY = 200
# The pull's purpose (list or planner); discovery runs record "discovery:<source>".
REFRESH_PURPOSE = "refresh"
_HOUR_MS = 3_600_000
_PAGE = 2_000
_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "run_id": {"type": "keyword"},
        "purpose": {"type": "keyword"},
        "endpoint": {"type": "keyword"},
        "market": {"type": "keyword"},
        "asins": {"type": "integer"},
        # /product: the ASINs asked (stored, not searched): the planner's memory of what it
        # refreshed before the products index learns of it.
        "asin_list": {"type": "keyword", "index": False, "doc_values": False},
        "request": {"type": "integer"},
        "tokens_consumed": {"type": "long"},
        "tokens_left": {"type": "long"},
        "refill_rate": {"type": "integer"},
        "at_ms": {"type": "long"},
    },
}


def ensure_index(es: ElasticsearchClient) -> None:
    es.ensure_index(KEEPA_LEDGER_INDEX, _MAPPING)


@dataclass
class KeepaLedger:
    """One run's requests, for one purpose; ``record`` is the Keepa client's observer."""

    es: ElasticsearchClient
    run_id: str
    purpose: str
    requests: int = 0
    tokens_consumed: int = 0
    _pending: list[BulkOp] = field(default_factory=list)

    def record(self, endpoint: str, market: str, asins: Sequence[str], tokens: TokenInfo) -> None:
        self.requests += 1
        self.tokens_consumed += tokens.tokens_consumed
        document = {
            "run_id": self.run_id,
            "purpose": self.purpose,
            "endpoint": endpoint,
            "market": market,
            "asins": len(asins),
            "request": self.requests,
            "tokens_consumed": tokens.tokens_consumed,
            "tokens_left": tokens.tokens_left,
            "refill_rate": tokens.refill_rate,
            "at_ms": tokens.timestamp_ms,
        }
        if endpoint == "/product":
            document["asin_list"] = list(asins)
        doc_id = f"{self.run_id}:{self.purpose}:{self.requests}"
        self._pending.append(BulkOp("index", KEEPA_LEDGER_INDEX, doc_id, document))
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        ensure_index(self.es)
        outcome = self.es.bulk_write(self._pending)
        if outcome.rejected:
            first = next(iter(outcome.rejected.values()))
            raise RuntimeError(
                f"the token ledger refused {len(outcome.rejected)} requests: {first}"
            )
        self._pending.clear()


@contextmanager
def ledger(es: ElasticsearchClient, run_id: str, purpose: str) -> Iterator[KeepaLedger]:
    """A run's ledger, flushed when the run ends however it ends."""
    book = KeepaLedger(es, run_id, purpose)
    try:
        yield book
    finally:
        book.flush()


@dataclass(frozen=True)
class Spend:
    hour_ms: int
    purpose: str
    requests: int
    tokens: int


def spend_by_hour(
    es: ElasticsearchClient, since_ms: int, until_ms: int, refresh: bool = True
) -> list[Spend]:
    """Tokens and requests per hour (Keepa's time) and purpose in [since_ms, until_ms);
    ``refresh``: make the requests just written searchable first."""
    client = es.client().options(ignore_status=404)
    if refresh:
        client.indices.refresh(index=KEEPA_LEDGER_INDEX)
    answer = client.search(
        index=KEEPA_LEDGER_INDEX,
        size=0,
        query={"range": {"at_ms": {"gte": since_ms, "lt": until_ms}}},
        aggs={
            "hours": {
                "histogram": {"field": "at_ms", "interval": _HOUR_MS, "min_doc_count": 1},
                "aggs": {
                    "purposes": {
                        "terms": {"field": "purpose", "size": 1000},
                        "aggs": {"tokens": {"sum": {"field": "tokens_consumed"}}},
                    }
                },
            }
        },
    )
    if "aggregations" not in answer:
        return []  # no ledger yet: nothing was spent
    return [
        Spend(int(hour["key"]), bucket["key"], bucket["doc_count"], int(bucket["tokens"]["value"]))
        for hour in answer["aggregations"]["hours"]["buckets"]
        for bucket in hour["purposes"]["buckets"]
    ]


def recent_refreshes(es: ElasticsearchClient, since_ms: int, purpose: str) -> dict[str, int]:
    """Each ASIN's latest ``/product`` request of ``purpose`` since ``since_ms`` (Keepa's
    time), read from the ledger in pages."""
    client = es.client().options(ignore_status=404)
    client.indices.refresh(index=KEEPA_LEDGER_INDEX)
    latest: dict[str, int] = {}
    after: list[Any] | None = None
    while True:
        answer = client.search(
            index=KEEPA_LEDGER_INDEX,
            size=_PAGE,
            query={
                "bool": {
                    "filter": [
                        {"term": {"purpose": purpose}},
                        {"term": {"endpoint": "/product"}},
                        {"range": {"at_ms": {"gte": since_ms}}},
                    ]
                }
            },
            source=["asin_list", "at_ms"],
            sort=[{"at_ms": "asc"}, {"run_id": "asc"}, {"request": "asc"}],
            **({"search_after": after} if after else {}),
        )
        hits = answer.get("hits", {}).get("hits", [])
        for hit in hits:
            at = hit["_source"]["at_ms"]
            for asin in hit["_source"].get("asin_list", []):
                latest[asin] = max(latest.get(asin, at), at)
        if len(hits) < _PAGE:
            return latest
        after = hits[-1]["sort"]


@dataclass(frozen=True)
class HourGauge:
    """The newest hour of the ledger (Keepa's time): tokens spent by purpose, and what the
    plan granted in it (its refill rate × 60; None when no answer carried the rate)."""

    hour_ms: int
    spent: dict[str, int]
    granted: int | None

    @property
    def total(self) -> int:
        return sum(self.spent.values())


def hour_gauge(es: ElasticsearchClient) -> HourGauge | None:
    """The gauge of the newest hour with spending; None before any request was recorded."""
    client = es.client().options(ignore_status=404)
    client.indices.refresh(index=KEEPA_LEDGER_INDEX)
    newest = client.search(
        index=KEEPA_LEDGER_INDEX, size=0, aggs={"newest": {"max": {"field": "at_ms"}}}
    )
    value = newest.get("aggregations", {}).get("newest", {}).get("value")
    if value is None:
        return None
    hour = int(value) // _HOUR_MS * _HOUR_MS
    spends = spend_by_hour(es, hour, hour + _HOUR_MS, refresh=False)  # refreshed above
    rate = client.search(
        index=KEEPA_LEDGER_INDEX,
        size=0,
        query={"range": {"at_ms": {"gte": hour, "lt": hour + _HOUR_MS}}},
        aggs={"rate": {"max": {"field": "refill_rate"}}},
    )["aggregations"]["rate"]["value"]
    spent = {s.purpose: s.tokens for s in sorted(spends, key=lambda s: -s.tokens)}
    return HourGauge(hour, spent, None if rate is None else int(rate) * 60)
