"""What each stage does to a batch of records, without any I/O.

The engine (arbitrage/engine/runner.py and arbitrage/engine/processors.py) reads the records from
Kafka and writes what these functions return to Elasticsearch and Kafka. Keeping this pure lets
tests and benchmarks call it directly and guarantees a poison record only ever becomes a
``Rejected`` entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from arbitrage.domain.enrichment import enrich, history_observations
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.lifecycle import LifecycleBatch, ProductRoutes, Route, apply_batch
from arbitrage.domain.messages.types import MAX_PULL_AHEAD_MS, Alert, EnrichedProduct, SchemaError
from arbitrage.domain.messages.validation import parse_enriched_product, parse_raw_update
from arbitrage.domain.price_history import PriceObservation
from arbitrage.domain.rules_config import RulesConfig

if TYPE_CHECKING:
    from arbitrage.domain.fee_model import Detection


@dataclass(frozen=True)
class SourceRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True)
class Rejected:
    record: SourceRecord
    reason: str


@dataclass
class EnrichmentBatch:
    products: list[tuple[SourceRecord, EnrichedProduct]]
    rejected: list[Rejected]
    # Keepa's price history of each product (``products`` order) as price observations, (id,
    # document); empty lists for products whose pull did not ask for history.
    history: list[list[tuple[str, PriceObservation]]] = field(default_factory=list)


@dataclass
class ArbitrageBatch:
    products: list[tuple[SourceRecord, EnrichedProduct]]
    rejected: list[Rejected]
    # Routes the rules removed, per reason (arbitrage/domain/route_filters.py, REASONS).
    filtered: dict[str, int] = field(default_factory=dict)
    # What each product record (``products`` order) says about every route: the input of the
    # alert lifecycle (arbitrage/domain/lifecycle.py).
    routes: list[ProductRoutes] = field(default_factory=list)

    def add_filtered(self, counts: dict[str, int]) -> None:
        for reason, count in counts.items():
            self.filtered[reason] = self.filtered.get(reason, 0) + count


def _key_mismatch(record: SourceRecord, asin: str) -> str | None:
    if record.key is None:
        # Keyless records land on any partition: one product's updates would lose their order.
        return f"the message has no key; keys must be the ASIN ({asin!r})"
    if record.key != asin.encode():
        shown = record.key[:40].decode("utf-8", "replace")
        return f"the message key {shown!r} differs from its asin {asin!r}; keys must be the ASIN"
    return None


def _too_far_ahead(product: EnrichedProduct, now_ms: int) -> str | None:
    ahead_ms = product["source_timestamp_ms"] - now_ms
    if ahead_ms > MAX_PULL_AHEAD_MS:
        return (
            f"field 'timestamp' is {product['source_timestamp']}, {ahead_ms / 60_000:.0f} minutes "
            f"ahead of this stage's clock (at most {MAX_PULL_AHEAD_MS // 60_000} allowed): as the "
            "document's version it would make every later update of this product count as older"
        )
    return None


def enrich_records(
    records: Sequence[SourceRecord], config: FeeConfig, now_ms: int
) -> EnrichmentBatch:
    """Validate and enrich; ``now_ms`` is the stage's clock, bounding pull times from above."""
    batch = EnrichmentBatch([], [])
    for record in records:
        try:
            raw = parse_raw_update(record.value)
            mismatch = _key_mismatch(record, raw["asin"])
            if mismatch:
                raise SchemaError(mismatch)
            product = enrich(raw, config)
            ahead = _too_far_ahead(product, now_ms)
            if ahead:
                raise SchemaError(ahead)
            history = history_observations(raw, config)
            batch.products.append((record, product))
            batch.history.append(history)
        except SchemaError as exc:
            batch.rejected.append(Rejected(record, str(exc)))
        except Exception as exc:
            batch.rejected.append(Rejected(record, f"enrichment failed unexpectedly: {exc!r}"))
    return batch


def arbitrage_records(
    records: Sequence[SourceRecord], config: FeeConfig, rules: RulesConfig, detected_at: str
) -> ArbitrageBatch:
    """Parse enriched products and detect alerts under the rules, unique by alert id within
    the batch, counting the routes the rules removed."""
    batch = ArbitrageBatch([], [])
    for record in records:
        try:
            product = parse_enriched_product(record.value)
            mismatch = _key_mismatch(record, product["asin"])
            if mismatch:
                raise SchemaError(mismatch)
            batch.products.append((record, product))
        except SchemaError as exc:
            batch.rejected.append(Rejected(record, str(exc)))
    if not batch.products:
        return batch
    products = [product for _, product in batch.products]
    detect = _fee_model()
    try:
        detection = detect(products, config, rules, detected_at)
    except Exception:
        return _arbitrage_one_by_one(batch, config, rules, detected_at)
    batch.add_filtered(detection.filtered)
    batch.routes = routes_seen(products, detection)
    return batch


def routes_seen(products: Sequence[EnrichedProduct], detection: Detection) -> list[ProductRoutes]:
    """What each product (in order) says about its routes: the lifecycle's input."""
    by_row: list[dict[Route, Alert]] = [{} for _ in products]
    for row, alert in zip(detection.rows, detection.alerts, strict=True):
        by_row[row][(alert["buy_market"], alert["sell_market"])] = alert
    reasons = _RouteReasons(detection, len(products))
    return [
        ProductRoutes(product["asin"], product["source_timestamp_ms"], by_row[row], reasons.of(row))
        for row, product in enumerate(products)
    ]


def opportunity_events(
    products: Sequence[EnrichedProduct],
    config: FeeConfig,
    rules: RulesConfig,
    detected_at: str,
    states: Mapping[str, Mapping[Route, Mapping[str, Any]]] | None = None,
) -> LifecycleBatch:
    """The events products make, in order, from ``states`` (default: no opportunity yet), as
    the arbitrage stage makes them (without its sweep of stale opportunities)."""
    detection = _fee_model()(products, config, rules, detected_at)
    return apply_batch(routes_seen(products, detection), states or {}, rules.lifecycle)


class _RouteReasons:
    """Why each route of a batch is no alert, worked out on the first question: most batches
    have no open opportunity to close, and then nobody asks."""

    def __init__(self, detection: Detection, rows: int) -> None:
        self.detection, self.rows = detection, rows
        self.by_row: dict[int, dict[Route, str]] | None = None

    def of(self, row: int) -> Callable[[Route], str]:
        def reason(route: Route) -> str:
            if self.by_row is None:
                self.by_row = self.detection.reasons_of_rows(range(self.rows))
            return self.by_row.get(row, {}).get(route, "")

        return reason


def _fee_model() -> Callable[[Sequence[EnrichedProduct], FeeConfig, RulesConfig, str], Detection]:
    """The fee model's entry point, imported on first use: pandas and pyarrow take about half a
    second of CPU to import, which every enrichment run and the code server would otherwise pay
    at start (cold runs start six at a time on two cores). Imported outside the batch's
    ``try``, so a broken install fails the run instead of dead-lettering the batch."""
    from arbitrage.domain.fee_model import detect

    return detect


def _arbitrage_one_by_one(
    batch: ArbitrageBatch, config: FeeConfig, rules: RulesConfig, detected_at: str
) -> ArbitrageBatch:
    kept: list[tuple[SourceRecord, EnrichedProduct]] = []
    detect = _fee_model()
    for record, product in batch.products:
        try:
            detection = detect([product], config, rules, detected_at)
        except Exception as exc:
            batch.rejected.append(Rejected(record, f"the fee model could not evaluate it: {exc!r}"))
            continue
        kept.append((record, product))
        batch.add_filtered(detection.filtered)
        batch.routes += routes_seen([product], detection)
    batch.products = kept
    return batch
