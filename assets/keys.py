"""Asset keys and groups, defined once: the prefix says where the data lives."""

from __future__ import annotations

import dagster as dg

KEEPA_PRODUCTS = dg.AssetKey(["keepa", "products"])
RAW_UPDATES = dg.AssetKey(["kafka", "raw_keepa_updates"])
RAW_UPDATES_DLQ = dg.AssetKey(["kafka", "raw_keepa_updates_dlq"])
PRODUCTS_ENRICHED = dg.AssetKey(["kafka", "products_enriched"])
PRODUCTS_ENRICHED_DLQ = dg.AssetKey(["kafka", "products_enriched_dlq"])
ARBITRAGE_ALERTS = dg.AssetKey(["kafka", "arbitrage_alerts"])
ES_PRODUCTS = dg.AssetKey(["elasticsearch", "products"])
ES_ALERTS = dg.AssetKey(["elasticsearch", "arbitrage_alerts"])

GROUP_INGEST = "ingest"
GROUP_ENRICHMENT = "enrichment"
GROUP_ARBITRAGE = "arbitrage"
