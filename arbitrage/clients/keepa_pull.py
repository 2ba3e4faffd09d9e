"""One Keepa pull: every ASIN from every market, merged into one raw update per ASIN.

``iter_pull`` loops over ASIN batches and markets of any ``KeepaSource`` (resources/
keepa_sources.py), reports progress after every request, and yields the raw updates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from arbitrage.clients.keepa_sources import KeepaSource
from arbitrage.domain.keepa_history import HistoryStats
from arbitrage.domain.keepa_parsing import chunked, merge_market_products
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.messages.types import ASIN_PATTERN, RawUpdate


@dataclass(frozen=True)
class PullProgress:
    """Reported after every request; lookups are (ASIN, market) pairs."""

    market: str
    batch_asins: int
    lookups_done: int
    lookups_total: int
    asins_done: int
    asins_total: int
    requests_made: int
    tokens_left: int | None


@dataclass
class PullTotals:
    """Running counts of a pull, updated as ``iter_pull`` goes."""

    asins_requested: int = 0
    requests_made: int = 0
    tokens_consumed: int = 0
    tokens_left: int | None = None
    per_market_received: dict[str, int] = field(default_factory=dict)
    not_found: list[str] = field(default_factory=list)  # in no market at all
    # Per market: what Keepa reported (tokensConsumed) and what its documented costs predict.
    tokens_consumed_per_market: dict[str, int] = field(default_factory=dict)
    tokens_estimated_per_market: dict[str, int] = field(default_factory=dict)
    tokens_per_product: int = 0  # the documented cost of one ASIN in one market
    # Keepa's csv histories, when the source asks for them (history_days > 0).
    history_days: int = 0
    history: HistoryStats = field(default_factory=HistoryStats)

    @property
    def tokens_estimated(self) -> int:
        return sum(self.tokens_estimated_per_market.values())


@dataclass(frozen=True)
class PullResult:
    updates: list[RawUpdate]
    per_market_received: dict[str, int]
    not_found: list[str]
    tokens_consumed: int
    tokens_left: int | None
    requests_made: int
    asins_requested: int
    tokens_consumed_per_market: dict[str, int] = field(default_factory=dict)
    tokens_estimated_per_market: dict[str, int] = field(default_factory=dict)


def _normalise_asins(asins: Sequence[str]) -> list[str]:
    unique = list(dict.fromkeys(a.strip().upper() for a in asins))
    bad = [a for a in unique if not ASIN_PATTERN.match(a)]
    if bad:
        raise ValueError(f"not ASINs (10 characters A-Z, 0-9): {', '.join(map(repr, bad[:5]))}")
    return unique


def iter_pull(
    source: KeepaSource,
    asins: Sequence[str],
    markets: Sequence[str],
    pulled_at: datetime,
    logger: logging.Logger,
    progress: Callable[[PullProgress], None] | None = None,
    totals: PullTotals | None = None,
) -> Iterator[RawUpdate]:
    """Yield one raw update per ASIN found in any market, batch by batch.

    For each batch of ASINs every market is asked before the batch is merged, so memory stays
    bounded for long lists and the caller can produce to Kafka while the pull goes on.
    """
    markets = tuple(dict.fromkeys(markets))
    if not markets:
        raise ValueError("no markets to pull; give codes such as DE,FR,IT,ES,GB")
    unknown = [m for m in markets if m not in MARKETPLACES]
    if unknown:
        raise ValueError(f"unknown marketplace code(s): {', '.join(unknown)}")
    wanted = _normalise_asins(asins)
    totals = totals if totals is not None else PullTotals()
    totals.asins_requested = len(wanted)
    totals.tokens_per_product = source.tokens_per_product
    totals.history_days = source.history_days
    for market in markets:
        totals.per_market_received.setdefault(market, 0)
        totals.tokens_consumed_per_market.setdefault(market, 0)
        totals.tokens_estimated_per_market.setdefault(market, 0)
    lookups_total = len(wanted) * len(markets)
    lookups_done = asins_done = 0

    for chunk in chunked(wanted, source.batch_size):
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for market in markets:
            batch = source.fetch_batch(market, chunk)
            totals.requests_made += 1
            totals.tokens_consumed += batch.tokens.tokens_consumed
            totals.tokens_consumed_per_market[market] += batch.tokens.tokens_consumed
            totals.tokens_estimated_per_market[market] += len(chunk) * source.tokens_per_product
            if batch.tokens.tokens_left is not None:
                totals.tokens_left = batch.tokens.tokens_left
            totals.per_market_received[market] += len(batch.products)
            for asin, product in batch.products.items():
                found.setdefault(asin, {})[market] = product
            lookups_done += len(chunk)
            if market == markets[-1]:
                asins_done += len(chunk)
            logger.debug("Keepa %s: %d of %d ASINs found", market, len(batch.products), len(chunk))
            if progress is not None:
                progress(
                    PullProgress(
                        market=market,
                        batch_asins=len(chunk),
                        lookups_done=lookups_done,
                        lookups_total=lookups_total,
                        asins_done=asins_done,
                        asins_total=len(wanted),
                        requests_made=totals.requests_made,
                        tokens_left=totals.tokens_left,
                    )
                )
        for asin in chunk:
            if asin in found:
                yield merge_market_products(
                    asin,
                    found[asin],
                    pulled_at,
                    source.source_name,
                    markets,
                    history_days=source.history_days,
                    history_stats=totals.history,
                )
            else:
                totals.not_found.append(asin)


def pull_products(
    source: KeepaSource,
    asins: Sequence[str],
    markets: Sequence[str],
    pulled_at: datetime,
    logger: logging.Logger,
    progress: Callable[[PullProgress], None] | None = None,
) -> PullResult:
    """Pull every ASIN from every market and merge them: one raw update per ASIN found."""
    totals = PullTotals()
    updates = list(iter_pull(source, asins, markets, pulled_at, logger, progress, totals))
    logger.info(
        "Keepa pull (%s): %d ASINs × %d markets in %d requests → %d raw updates, "
        "%d not found anywhere, %d tokens used",
        source.source_name,
        totals.asins_requested,
        len(markets),
        totals.requests_made,
        len(updates),
        len(totals.not_found),
        totals.tokens_consumed,
    )
    return PullResult(
        updates=updates,
        per_market_received=dict(totals.per_market_received),
        not_found=list(totals.not_found),
        tokens_consumed=totals.tokens_consumed,
        tokens_left=totals.tokens_left,
        requests_made=totals.requests_made,
        asins_requested=totals.asins_requested,
        tokens_consumed_per_market=dict(totals.tokens_consumed_per_market),
        tokens_estimated_per_market=dict(totals.tokens_estimated_per_market),
    )
