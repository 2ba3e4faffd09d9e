"""The life of an opportunity: opened, updated, closed (docs/design.md, "Alert lifecycle";
decision 34).

An opportunity is one route of one product under one fee model and one rules file: (ASIN, buy
market, sell market, fee version, rules version). Each product record the arbitrage stage reads
says, for every route, either "an alert at these prices" or why not (a route reason). This
module turns that sequence into events:

- ``opened``: the route qualifies and the opportunity is not open. Each opening starts a new
  episode, with a new ``alert_id`` (the opportunity id and the episode number);
- ``updated``: it is open and its profit moved by at least ``update_min_change_cents`` since the
  last event (smaller moves only confirm it: no event, the state's data time moves);
- ``closed``: it is open and the route no longer qualifies (the reason: the fee model's or the
  rule's), or its data is older than ``max_data_age_s`` behind the newest data the partition has
  seen (``stale``).

Every event carries the opportunity's ``version`` (one more per event, across episodes), so a
reader can order them and drop what it has seen; ``event_id`` (opportunity id + version) is
unique. Time is the data's (Keepa pull times), never the wall clock: a rerun of the same records
from the same state makes the same events, and a record no newer than the state's data (a
replay, a duplicate) changes nothing. Pure: no Dagster, no network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OPENED, UPDATED, CLOSED = "opened", "updated", "closed"
OPEN, CLOSED_STATUS = "open", "closed"
EVENTS: tuple[str, ...] = (OPENED, UPDATED, CLOSED)
# Close reasons besides the route reasons of arbitrage/domain/route_filters.py.
STALE = "stale"  # no data newer than max_data_age_s behind the partition's newest
NO_PRICE = "no_price"  # a market of the route has no price any more: the route was not evaluated
# Fields of a stored state that are not part of an event (bookkeeping of the stage).
STATE_ONLY_FIELDS = ("confirmed_source_ms", "updated_by", "base")

DEFAULT_UPDATE_MIN_CHANGE_CENTS = 100
DEFAULT_MAX_DATA_AGE_S = 24 * 3600


@dataclass(frozen=True)
class LifecycleRules:
    """When a change of an open opportunity is news, and when its data is too old to act on."""

    update_min_change_cents: int = DEFAULT_UPDATE_MIN_CHANGE_CENTS
    max_data_age_s: int = DEFAULT_MAX_DATA_AGE_S

    @property
    def max_data_age_ms(self) -> int:
        return self.max_data_age_s * 1000


@dataclass(frozen=True)
class RouteSeen:
    """What one product record says about one route: an alert, or the reason it is none."""

    source_ms: int  # the record's data time (the pull), epoch ms
    alert: Mapping[str, Any] | None
    reason: str = ""


def opportunity_id(
    asin: str, buy_market: str, sell_market: str, fee_version: str, rules_version: str
) -> str:
    """Readable and stable: the same route judged by the same fee model and rules."""
    return f"{asin}-{buy_market}-{sell_market}-fees_{fee_version}-rules_{rules_version}"


def episode_alert_id(opportunity: str, episode: int) -> str:
    return f"{opportunity}-e{episode}"


def event_id(opportunity: str, version: int) -> str:
    return f"{opportunity}-v{version}"


def is_open(state: Mapping[str, Any] | None) -> bool:
    return state is not None and state.get("status") == OPEN


def advance(
    state: Mapping[str, Any] | None,
    seen: RouteSeen,
    rules: LifecycleRules,
    watermark_ms: int,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The opportunity's next state and the event it makes, if any.

    Returns ``(None, None)`` when nothing changes (nothing to write). ``watermark_ms`` is the
    newest data time the partition has seen, this record's included. ``seen.alert`` must carry
    the opportunity's identity fields (asin, markets, versions) and its money lines.
    """
    if state is not None and seen.source_ms <= int(state.get("confirmed_source_ms", -1)):
        return None, None  # older or the same data again (a replay or a duplicate)
    stale = seen.source_ms < watermark_ms - rules.max_data_age_ms
    if seen.alert is not None and not stale:
        if not is_open(state):
            return _event(seen.alert, state, OPENED, seen.source_ms)
        assert state is not None
        moved = abs(int(seen.alert["profit_eur_cents"]) - int(state["profit_eur_cents"]))
        if moved >= rules.update_min_change_cents:
            return _event(seen.alert, state, UPDATED, seen.source_ms)
        return {**state, "confirmed_source_ms": seen.source_ms}, None
    if is_open(state):
        assert state is not None
        return close(state, STALE if stale else seen.reason or NO_PRICE, seen.source_ms)
    return None, None


def close(
    state: Mapping[str, Any], reason: str, source_ms: int, moves_data_time: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Close an open opportunity: the event repeats its last announced lines. ``source_ms`` is
    the data time that closed it (the record's, or the watermark for a stale one, which is
    no data about the opportunity: ``moves_data_time`` False)."""
    version = int(state["version"]) + 1
    closed = {
        **state,
        "event": CLOSED,
        "status": CLOSED_STATUS,
        "version": version,
        "event_id": event_id(state["opportunity_id"], version),
        "close_reason": reason,
        "closed_at_source_ms": source_ms,
    }
    if moves_data_time:
        closed["confirmed_source_ms"] = max(source_ms, int(state.get("confirmed_source_ms", -1)))
    return closed, event_of(closed)


def is_stale(state: Mapping[str, Any], rules: LifecycleRules, watermark_ms: int) -> bool:
    """An open opportunity no record has confirmed for longer than the data age allows."""
    return is_open(state) and int(state["confirmed_source_ms"]) < (
        watermark_ms - rules.max_data_age_ms
    )


def event_of(state: Mapping[str, Any]) -> dict[str, Any]:
    """The event a state announces: the state without the stage's bookkeeping."""
    return {k: v for k, v in state.items() if k not in STATE_ONLY_FIELDS}


def _event(
    alert: Mapping[str, Any], state: Mapping[str, Any] | None, kind: str, source_ms: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    opportunity = opportunity_id(
        alert["asin"],
        alert["buy_market"],
        alert["sell_market"],
        alert["fee_model_version"],
        alert.get("rules_version", "none"),
    )
    version = int(state["version"]) + 1 if state is not None else 1
    if kind == OPENED:
        episode = int(state["episode"]) + 1 if state is not None else 1
        opened_at = alert["detected_at"]
        previous: dict[str, Any] = {}
    else:
        assert state is not None
        episode, opened_at = int(state["episode"]), state["opened_at"]
        previous = {"previous_profit_eur_cents": int(state["profit_eur_cents"])}
    new = {
        **{k: v for k, v in alert.items() if k not in _REPLACED_EACH_EVENT},
        "alert_id": episode_alert_id(opportunity, episode),
        "opportunity_id": opportunity,
        "event": kind,
        "event_id": event_id(opportunity, version),
        "status": OPEN,
        "episode": episode,
        "version": version,
        "opened_at": opened_at,
        **previous,
        "confirmed_source_ms": source_ms,
    }
    return new, event_of(new)


# What an event never carries over from the state or the detection: each event sets its own.
_REPLACED_EACH_EVENT = frozenset(
    {
        "alert_id",
        "previous_profit_eur_cents",
        "close_reason",
        "closed_at_source_ms",
        *STATE_ONLY_FIELDS,
    }
)


Route = tuple[str, str]  # (buy market, sell market)


@dataclass(frozen=True)
class ProductRoutes:
    """One product record as the lifecycle sees it: its alerts by route, and for any other
    route, why it is none (``reason_of``; only asked about routes with a state)."""

    asin: str
    source_ms: int
    alerts: Mapping[Route, Mapping[str, Any]]
    reason_of: Callable[[Route], str]


@dataclass
class LifecycleBatch:
    """A batch's events in record order, and the states they leave (only the changed ones)."""

    events: list[dict[str, Any]]
    changed: dict[str, dict[str, Any]]  # by opportunity id
    watermark_ms: int
    # Records whose every opportunity already had data this new (a replay, a duplicate).
    already_seen: int = 0


def apply_batch(
    products: Sequence[ProductRoutes],
    states: Mapping[str, Mapping[Route, Mapping[str, Any]]],
    rules: LifecycleRules,
    watermark_ms: int = -1,
) -> LifecycleBatch:
    """Run a batch of product records, in order, through the lifecycle.

    ``states`` holds each ASIN's opportunities by route as they were before the batch (under
    the batch's fee and rules versions); ``watermark_ms`` the newest data time seen before it.
    """
    current: dict[str, dict[Route, Mapping[str, Any]]] = {}
    batch = LifecycleBatch([], {}, watermark_ms)
    for product in products:
        batch.watermark_ms = max(batch.watermark_ms, product.source_ms)
        mine = current.get(product.asin)
        if mine is None:
            mine = current[product.asin] = dict(states.get(product.asin, {}))
        if mine and all(
            product.source_ms <= int(state.get("confirmed_source_ms", -1))
            for state in mine.values()
        ):
            batch.already_seen += 1
            continue
        for route in sorted(set(product.alerts) | set(mine)):
            alert = product.alerts.get(route)
            seen = RouteSeen(
                product.source_ms, alert, "" if alert is not None else product.reason_of(route)
            )
            new, event = advance(mine.get(route), seen, rules, batch.watermark_ms)
            if new is not None:
                mine[route] = new
                batch.changed[new["opportunity_id"]] = new
            if event is not None:
                batch.events.append(event)
    return batch


def close_stale(
    states: Sequence[Mapping[str, Any]], rules: LifecycleRules, watermark_ms: int
) -> LifecycleBatch:
    """Close the open opportunities among ``states`` whose data is too old (the sweep)."""
    batch = LifecycleBatch([], {}, watermark_ms)
    for state in states:
        if is_stale(state, rules, watermark_ms):
            new, event = close(state, STALE, watermark_ms, moves_data_time=False)
            batch.changed[new["opportunity_id"]] = new
            batch.events.append(event)
    return batch


def committed_view(
    stored: Mapping[str, Any], group: str, partition: int, first_offset: int
) -> dict[str, Any] | None:
    """The state a batch starting at ``first_offset`` must build on, from the stored document.

    A document written by this group's batch at or after that offset was written by an attempt
    whose transaction never committed (the committed offset is ``first_offset``): its events
    were never seen, so the state before it (``base``; None: there was none) is the truth.
    """
    by = stored.get("updated_by") or {}
    if (
        by.get("group") == group
        and by.get("partition") == partition
        and int(by.get("offset", -1)) >= first_offset
    ):
        base = stored.get("base")
        return None if base is None else dict(base)
    return {k: v for k, v in stored.items() if k not in ("updated_by", "base")}
