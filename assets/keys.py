"""Asset keys and groups, by one rule: the prefix says where the data lives.

A topic's key is ``kafka/<name with dots as underscores>``, an index's is
``elasticsearch/<name with dashes as underscores>``; the names come from arbitrage/domain/topics.py,
without the namespace (ARBITRAGE_NAMESPACE): the asset graph is the same in every namespace.
Constants end in ``_KEY`` so they never read like the topic names they are derived from.
"""

from __future__ import annotations

import dagster as dg

from arbitrage.domain import topics

GROUP_INGEST = "ingest"
# The notifications stage's group (its spec's name); the daily digest sits in it too.
GROUP_NOTIFICATIONS = "notifications"


def topic_asset_key(topic: str) -> dg.AssetKey:
    return dg.AssetKey(["kafka", topics.plain_name(topic).replace(".", "_")])


def index_asset_key(index: str) -> dg.AssetKey:
    return dg.AssetKey(["elasticsearch", topics.plain_name(index).replace("-", "_")])


KEEPA_PRODUCTS_KEY = dg.AssetKey(["keepa", "products"])
RAW_UPDATES_KEY = topic_asset_key(topics.RAW_UPDATES)
RAW_UPDATES_DLQ_KEY = topic_asset_key(topics.RAW_UPDATES_DLQ)
PRODUCTS_ENRICHED_KEY = topic_asset_key(topics.PRODUCTS_ENRICHED)
PRODUCTS_ENRICHED_DLQ_KEY = topic_asset_key(topics.PRODUCTS_ENRICHED_DLQ)
ARBITRAGE_ALERTS_KEY = topic_asset_key(topics.ARBITRAGE_ALERTS)
ARBITRAGE_ALERTS_DLQ_KEY = topic_asset_key(topics.ARBITRAGE_ALERTS_DLQ)
ES_PRODUCTS_KEY = index_asset_key(topics.PRODUCTS_INDEX)
ES_ALERTS_KEY = index_asset_key(topics.ALERTS_INDEX)
ES_PRICE_OBSERVATIONS_KEY = index_asset_key(topics.PRICE_OBSERVATIONS_INDEX)
ES_DELIVERIES_KEY = index_asset_key(topics.DELIVERIES_INDEX)
# What leaves the pipeline once a day: the digest sent to the channels (and its chart PNG).
DIGEST_KEY = dg.AssetKey(["notifications", "daily_digest"])
