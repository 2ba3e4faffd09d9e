"""The registry of tracked ASINs (Elasticsearch ``tracked-asins``): one document per (ASIN,
discovery source) that found it, id ``<asin>:<source>``, with the source's kind, market and
why, when it first and last found the ASIN (Keepa's clock: the answer's ``timestamp``) and
when that finding expires (``last_found_ms + max_age``). An ASIN is tracked while any of its
documents has not expired; the seller's own list (``asins_file``) never expires while the ASIN
is on it.

No scripts (the local Elasticsearch has no scripting module, and none is needed): a finding is
indexed with its ``last_found_ms`` as external version, so a late or repeated run never moves
it back, and ``first_found_ms`` is carried over from the stored document read just before.
Sources write different documents, so concurrent sources never touch each other's.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from arbitrage.clients.elasticsearch import BulkOp, BulkOutcome, ElasticsearchClient
from arbitrage.domain.discovery_config import OWN_LIST, DiscoverySource
from arbitrage.domain.keepa_discovery import PriceDrop
from arbitrage.domain.topics import TRACKED_ASINS_INDEX

# The own list's findings expire at the end of time (until the ASIN leaves the list).
NEVER_MS = 2**62
_HOUR_MS = 3_600_000
_PAGE = 5_000
_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "asin": {"type": "keyword"},
        "source": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "market": {"type": "keyword"},
        "why": {"type": "text", "index": False},
        "first_found_ms": {"type": "long"},
        "last_found_ms": {"type": "long"},
        "expires_ms": {"type": "long"},
        # Deals: the newest price drop the source reported (Keepa's creationDate, minor units).
        "deal_ms": {"type": "long"},
        "deal_drop_minor": {"type": "long"},
    },
}


@dataclass(frozen=True)
class TrackedAsin:
    asin: str
    sources: dict[str, dict[str, Any]] = field(default_factory=dict)  # source → its finding

    @property
    def expires_ms(self) -> int:
        return max(finding["expires_ms"] for finding in self.sources.values())


def ensure_index(es: ElasticsearchClient) -> None:
    es.ensure_index(TRACKED_ASINS_INDEX, _MAPPING)


def _doc_id(asin: str, source: str) -> str:
    return f"{asin}:{source}"


def _record(
    es: ElasticsearchClient,
    asins: Iterable[str],
    source: str,
    finding: dict[str, Any],
    at_ms: int,
    max_age_ms: int | None,
    drops: Mapping[str, PriceDrop] | None = None,
) -> BulkOutcome:
    ensure_index(es)
    drops = drops or {}
    unique = list(dict.fromkeys(asins))
    ids = [_doc_id(asin, source) for asin in unique]
    first = es.field_by_id(TRACKED_ASINS_INDEX, ids, "first_found_ms", _PAGE)
    expires = NEVER_MS if max_age_ms is None else at_ms + max_age_ms
    ops = [
        BulkOp(
            "index",
            TRACKED_ASINS_INDEX,
            doc_id,
            {
                "asin": asin,
                "source": source,
                **finding,
                "first_found_ms": min(first.get(doc_id, at_ms), at_ms),
                "last_found_ms": at_ms,
                "expires_ms": expires,
                **(
                    {"deal_ms": drops[asin].since_ms, "deal_drop_minor": drops[asin].drop_minor}
                    if asin in drops
                    else {}
                ),
            },
            version=at_ms,
            version_type="external_gte",
        )
        for asin, doc_id in zip(unique, ids, strict=True)
    ]
    outcome = es.bulk_write(ops)
    if outcome.rejected:
        first_reason = next(iter(outcome.rejected.values()))
        raise RuntimeError(
            f"the registry refused {len(outcome.rejected)} of {len(ops)} findings "
            f"(first: {first_reason})"
        )
    es.refresh(TRACKED_ASINS_INDEX)
    return outcome


def record_found(
    es: ElasticsearchClient,
    source: DiscoverySource,
    asins: Iterable[str],
    at_ms: int,
    drops: Mapping[str, PriceDrop] | None = None,
) -> BulkOutcome:
    """What one run of ``source`` found, at Keepa's ``at_ms`` (a deal source: with each
    ASIN's price drop, what the token planner weighs its refresh by)."""
    finding = {"kind": source.kind, "market": source.market, "why": source.why}
    max_age_ms = source.max_age_hours * _HOUR_MS
    return _record(es, asins, source.name, finding, at_ms, max_age_ms, drops)


def record_own_list(es: ElasticsearchClient, asins: Sequence[str], at_ms: int) -> BulkOutcome:
    """The seller's list as it is now: its ASINs tracked until they leave it; the findings of
    those that left are deleted."""
    finding = {"kind": OWN_LIST, "market": "", "why": "the seller's own list (KEEPA_ASINS_FILE)"}
    outcome = _record(es, asins, OWN_LIST, finding, at_ms, None)
    listed = set(asins)
    left = [t.asin for t in _findings(es, {"term": {"source": OWN_LIST}}) if t.asin not in listed]
    for start in range(0, len(left), _PAGE):
        deletes = [
            {"delete": {"_index": TRACKED_ASINS_INDEX, "_id": _doc_id(asin, OWN_LIST)}}
            for asin in left[start : start + _PAGE]
        ]
        answer = es.client().bulk(operations=deletes, refresh=True)
        failed = [
            item["delete"] for item in answer["items"] if item["delete"]["status"] not in (200, 404)
        ]
        if failed:
            raise RuntimeError(f"the registry refused {len(failed)} deletions: {failed[0]}")
    return outcome


def _findings(es: ElasticsearchClient, query: dict[str, Any]) -> Iterator[TrackedAsin]:
    """Every finding matching ``query``, grouped by ASIN, ASIN by ASIN (paged: a registry of
    a million ASINs is read in pages of ``_PAGE``; no registry yet: nothing)."""
    after: list[Any] | None = None
    current: TrackedAsin | None = None
    while True:
        page = (
            es.client()
            .options(ignore_status=404)
            .search(
                index=TRACKED_ASINS_INDEX,
                query=query,
                sort=[{"asin": "asc"}, {"source": "asc"}],
                size=_PAGE,
                **({"search_after": after} if after else {}),
            )
        )
        hits = page.get("hits", {}).get("hits", [])
        for hit in hits:
            doc = hit["_source"]
            if current is None or current.asin != doc["asin"]:
                if current is not None:
                    yield current
                current = TrackedAsin(doc["asin"])
            current.sources[doc["source"]] = {k: v for k, v in doc.items() if k != "asin"}
        if len(hits) < _PAGE:
            break
        after = hits[-1]["sort"]
    if current is not None:
        yield current


def tracked(es: ElasticsearchClient, now_ms: int) -> list[TrackedAsin]:
    """The ASINs tracked at ``now_ms``, each with its findings that have not expired."""
    return list(_findings(es, {"range": {"expires_ms": {"gt": now_ms}}}))


def tracked_count(es: ElasticsearchClient, now_ms: int) -> int:
    """How many ASINs are tracked at ``now_ms``, counted by Elasticsearch without reading them
    (exact up to 40 000 ASINs, within a few per mille beyond: a cardinality count)."""
    answer = (
        es.client()
        .options(ignore_status=404)
        .search(
            index=TRACKED_ASINS_INDEX,
            size=0,
            query={"range": {"expires_ms": {"gt": now_ms}}},
            aggs={"asins": {"cardinality": {"field": "asin", "precision_threshold": 40_000}}},
        )
    )
    if "aggregations" not in answer:
        return 0  # no registry yet
    return int(answer["aggregations"]["asins"]["value"])


def aged_out(es: ElasticsearchClient, now_ms: int) -> int:
    """How many ASINs of the registry no finding tracks any more at ``now_ms``."""
    every = {t.asin for t in _findings(es, {"match_all": {}})}
    return len(every - {t.asin for t in tracked(es, now_ms)})
