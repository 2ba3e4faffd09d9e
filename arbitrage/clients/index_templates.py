"""What the indices look like: each index's mapping and the index template that carries it,
with a fingerprint so a run puts a template only when ours changed, and the fields an existing
index lacks (only adding is possible without a rebuild)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.topics import (
    ALERTS_INDEX,
    DELIVERIES_INDEX,
    PRICE_OBSERVATIONS_INDEX,
    PRODUCTS_INDEX,
)


def _source_only(field_type: str) -> dict[str, Any]:
    """A field kept in ``_source`` (every reader gets it) but neither indexed nor in doc
    values: not searchable, sortable or aggregatable, and nothing for Elasticsearch to build."""
    return {"type": field_type, "index": False, "doc_values": False}


def _market_mapping() -> dict[str, Any]:
    """One market of a product. Searchable: its prices (own currency and EUR), rank, offers
    and update time. Kept in ``_source`` only: how the fee inputs were resolved, and the
    signals (the rules read them from products.enriched, never from the index). Each indexed
    field costs the enrichment stage's bulk requests: with all ~195 market fields indexed the
    stage ran at 0.75× the raw floor, with these at 0.86× (bench.enrichment, n = 100 000)."""
    return {
        "properties": {
            "domain_id": _source_only("integer"),
            "currency": {"type": "keyword"},
            "buy_box": {"type": "long"},
            "amazon": {"type": "long"},
            "new": {"type": "long"},
            "sales_rank": {"type": "long"},
            "offer_count_new": {"type": "integer"},
            # Keepa's raw value as sent (may be fractional); the resolved integer is below.
            "referral_fee_pct": _source_only("keyword"),
            "fba_fee": _source_only("long"),
            "root_category": _source_only("long"),
            "last_update": {"type": "date"},
            "buy_price": {"type": "long"},
            "sell_price": {"type": "long"},
            "buy_price_eur_cents": {"type": "long"},
            "sell_price_eur_cents": {"type": "long"},
            "vat_pct_x100": _source_only("integer"),
            "fx_eur_per_unit": _source_only("keyword"),
            "referral_pct_x100": _source_only("integer"),
            "referral_pct_source": _source_only("keyword"),
            "fba_fee_resolved": _source_only("long"),
            "fba_fee_source": _source_only("keyword"),
            # arbitrage/domain/messages/signals.py; an object in every document, not indexed.
            "signals": {"type": "object", "enabled": False},
        }
    }


PACKAGE_MAPPING = {
    "properties": {
        "weight_g": {"type": "integer"},
        "length_mm": {"type": "integer"},
        "width_mm": {"type": "integer"},
        "height_mm": {"type": "integer"},
    }
}

PRODUCTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "schema_version": {"type": "integer"},
        "asin": {"type": "keyword"},
        "title": {"type": "text"},
        "domain_id": {"type": "integer"},
        "category": {"properties": {"root_id": {"type": "long"}, "name": {"type": "keyword"}}},
        "package": PACKAGE_MAPPING,
        "markets": {"properties": {code: _market_mapping() for code in MARKETPLACES}},
        "cheapest_market": {"type": "keyword"},
        "dearest_market": {"type": "keyword"},
        "spread_eur_cents": {"type": "long"},
        "fx_rates_date": {"type": "date"},
        "source": {"type": "keyword"},
        "source_timestamp": {"type": "date"},
        "source_timestamp_ms": {"type": "long"},
    },
}

_PRICE = {"properties": {"amount": {"type": "long"}, "currency": {"type": "keyword"}}}
# Which batch of which group wrote a document (a record's place in a topic).
_WRITTEN_BY = {
    "properties": {
        "group": {"type": "keyword"},
        "topic": {"type": "keyword"},
        "partition": {"type": "integer"},
        "offset": {"type": "long"},
    }
}

ALERTS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "schema_version": {"type": "integer"},
        "alert_id": {"type": "keyword"},
        "asin": {"type": "keyword"},
        "title": {"type": "text"},
        "buy_market": {"type": "keyword"},
        "sell_market": {"type": "keyword"},
        "buy_price": _PRICE,
        "sell_price": _PRICE,
        "fx_buy_eur_per_unit": {"type": "keyword"},
        "fx_sell_eur_per_unit": {"type": "keyword"},
        "buy_net": {"type": "long"},
        "sell_net": {"type": "long"},
        "referral_fee": {"type": "long"},
        "fba_fee": {"type": "long"},
        "inbound_shipping": {"type": "long"},
        # Fee model v2's lines (absent from v1 alerts).
        "closing_fee": {"type": "long"},
        "efn_fee": {"type": "long"},
        "dst_fee": {"type": "long"},
        "fee_vat": {"type": "long"},
        "fulfilment": {"type": "keyword"},
        "profit_eur_cents": {"type": "long"},
        "roi": {"type": "float"},  # a ratio for sorting, never money
        "sales_rank": {"type": "long"},
        "fx_rates_date": {"type": "date"},
        "fee_model_version": {"type": "keyword"},
        # The signal rules (docs/fees.md, "Rules"): their version and the sell market's signals the
        # alert was judged on (null where Keepa had no data).
        "rules_version": {"type": "keyword"},
        "signals": {
            "properties": {
                "monthly_sales": {"type": "integer"},
                "sales_estimator": {"type": "keyword"},
                "sell_price_current": {"type": "long"},
                "sell_avg90": {"type": "long"},
                "sell_avg90_kind": {"type": "keyword"},
                "amazon_buy_box_pct": {"type": "byte"},
                "fba_offers": {"type": "integer"},
                "oos_pct90": {"type": "byte"},
                "missing": {"type": "keyword"},
                # The risk facts of both stores' listings: shown, never searched.
                "listing": {"type": "object", "enabled": False},
                # Days to sell, storage and the profit after it ([time_to_sell]): shown only.
                "storage": {"type": "object", "enabled": False},
            }
        },
        "source_timestamp": {"type": "date"},
        "detected_at": {"type": "date"},
        # The alert lifecycle (arbitrage/domain/lifecycle.py): one document per opportunity, its
        # current state; ``alert_id`` names the current episode.
        "opportunity_id": {"type": "keyword"},
        "event": {"type": "keyword"},
        "event_id": {"type": "keyword"},
        "status": {"type": "keyword"},
        "episode": {"type": "integer"},
        "version": {"type": "integer"},
        "opened_at": {"type": "date"},
        "previous_profit_eur_cents": {"type": "long"},
        "close_reason": {"type": "keyword"},
        "closed_at_source_ms": {"type": "date", "format": "epoch_millis"},
        "confirmed_source_ms": {"type": "date", "format": "epoch_millis"},
        # Which batch wrote the state, and the state before it: a rerun takes the state from
        # before a batch whose transaction never committed (arbitrage/engine/processors.py).
        "updated_by": _WRITTEN_BY,
        "base": {"type": "object", "enabled": False},
        # Alerts raised before the lifecycle (schema 1) said where they were raised.
        "raised_by": _WRITTEN_BY,
    },
}

# arbitrage/domain/price_history.py: one small document per (ASIN, pull), for charts only. Only the
# ASIN and the time are indexed; the prices are read from the source of one ASIN's documents.
# (Documents written before 2026-11-29 have one market each, with the prices as fields:
# arbitrage/web/queries.py reads both shapes.)
PRICE_OBSERVATIONS_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "asin": {"type": "keyword"},
        "observed_at": {"type": "date", "format": "epoch_millis"},
        "markets": {"type": "object", "enabled": False},
        "market": {"type": "keyword"},
        "currency": {"type": "keyword", "index": False},
        "buy_price": {"type": "long", "index": False},
        "sell_price": {"type": "long", "index": False},
        "buy_price_eur_cents": {"type": "long", "index": False},
        "sell_price_eur_cents": {"type": "long", "index": False},
    },
}

# The notifications stage's ledger (arbitrage/engine/processors.py, NotificationsProcessor): doc id
# ``<channel>:<event_id>``; a ``delivered`` one is never sent again.
DELIVERIES_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "channel": {"type": "keyword"},
        "channel_type": {"type": "keyword"},
        "event_id": {"type": "keyword"},
        "alert_id": {"type": "keyword"},
        "opportunity_id": {"type": "keyword"},
        "asin": {"type": "keyword"},
        "event": {"type": "keyword"},
        "status": {"type": "keyword"},  # delivered | failed
        "attempts": {"type": "integer"},
        "last_error": {"type": "text"},  # redacted: never a URL's token or a secret
        "delivered_at": {"type": "date"},
        "updated_at": {"type": "date"},
        "updated_by": _WRITTEN_BY,
    },
}

INDEX_TEMPLATES: dict[str, dict[str, Any]] = {
    PRODUCTS_INDEX: PRODUCTS_MAPPING,
    ALERTS_INDEX: ALERTS_MAPPING,
    PRICE_OBSERVATIONS_INDEX: PRICE_OBSERVATIONS_MAPPING,
    DELIVERIES_INDEX: DELIVERIES_MAPPING,
}
# The template's content hash, kept in its _meta: a run puts a template only when ours changed.
TEMPLATE_FINGERPRINT = "arbitrage_fingerprint"


def template_name(index: str) -> str:
    return f"arbitrage-{index}"


def _template_body(index: str, mapping: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "index_patterns": [index],
        "priority": 500,
        "template": {
            # No refresh_interval: Elasticsearch's default refreshes every second while the
            # index is searched and skips refreshes after 30 s without searches (a search then
            # waits for one). Nothing searches `products` while the stage writes it, and the
            # refreshes cost the stage ~7 % (bench.enrichment, 0.67× → 0.75× of the floor).
            # One replica wherever there is a second data node to hold it, none on a single node
            # (where a replica could never be assigned and the health would stay yellow): the
            # cluster sets the count from its data nodes, also as they come and go
            # (docs/decisions.md, 43).
            "settings": {"number_of_shards": 1, "auto_expand_replicas": "0-1"},
            "mappings": mapping,
        },
    }
    canonical = json.dumps(body, sort_keys=True).encode()
    body["_meta"] = {TEMPLATE_FINGERPRINT: hashlib.sha256(canonical).hexdigest()[:16]}
    return body


INDEX_TEMPLATES_BODIES = {
    index: _template_body(index, mapping) for index, mapping in INDEX_TEMPLATES.items()
}


def missing_properties(wanted: dict[str, Any], present: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``wanted`` an index mapped as ``present`` lacks (objects recursively).
    Only adding is possible on an existing index: a field whose parameters changed keeps the
    ones it was created with until the index is rebuilt (docs/design.md, "Indices")."""
    missing: dict[str, Any] = {}
    for name, spec in wanted.items():
        if name not in present:
            missing[name] = spec
        elif (
            spec.get("enabled") is False
            and "properties" in present[name]
            and str(present[name].get("dynamic", "strict")).lower() == "strict"
        ):
            # An object an earlier release indexed field by field, now kept in _source only:
            # it cannot stop being indexed, but its new fields must not be refused, so they
            # are taken unindexed (dynamic false) from now on.
            missing[name] = {"type": "object", "dynamic": False}
        elif "properties" in spec and "properties" in present[name]:
            inner = missing_properties(spec["properties"], present[name]["properties"])
            if inner:
                missing[name] = {"properties": inner}
    return missing
