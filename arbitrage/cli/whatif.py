"""`arbitrage whatif`: recompute a window's opportunities under other fees or rules, read-only.

Reads ``products.enriched`` from the first offset at ``--since`` to the end (a consumer group of
the CLI's own that never commits), runs the fee model and rules the arbitrage stage runs on each
ASIN's latest product, and compares with the alerts the live stage raised from the same
products (the ``arbitrage-alerts`` index). Nothing is produced, indexed or committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elasticsearch import helpers

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.fee_model import detect
from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.messages.types import EnrichedProduct, SchemaError
from arbitrage.domain.messages.validation import parse_enriched_product
from arbitrage.domain.rules_config import RulesConfig
from arbitrage.domain.whatif import Change, compare, latest_products, live_of

READER_GROUP = topics.tool_name("cli-whatif")  # reads only; commits nothing
ASINS_PER_QUERY = 1000


@dataclass
class WhatIfReport:
    records_read: int = 0
    unreadable: int = 0  # records the arbitrage stage would dead-letter too
    products: int = 0  # distinct ASINs (their latest product each)
    live_alerts: int = 0
    whatif_alerts: int = 0
    filtered: dict[str, int] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)


def whatif(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    fees: FeeConfig,
    rules: RulesConfig,
    since_ms: int,
) -> WhatIfReport:
    report = WhatIfReport()
    products = latest_products(_read_products(kafka, since_ms, report))
    report.products = len(products)
    detection = detect(products, fees, rules, utc_now_iso())
    live = live_of(_live_alerts(es, [p["asin"] for p in products]), products)
    report.live_alerts, report.whatif_alerts = len(live), len(detection.alerts)
    report.filtered = dict(detection.filtered)
    report.changes = compare(live, detection.alerts)
    return report


def _read_products(
    kafka: KafkaClient, since_ms: int, report: WhatIfReport
) -> list[EnrichedProduct]:
    products = []
    for message in kafka.messages_since(topics.PRODUCTS_ENRICHED, since_ms, READER_GROUP):
        report.records_read += 1
        try:
            products.append(parse_enriched_product(message.value()))
        except SchemaError:
            report.unreadable += 1
    return products


def _live_alerts(es: ElasticsearchClient, asins: list[str]) -> list[dict[str, Any]]:
    client = es.client()
    client.indices.refresh(index=topics.ALERTS_INDEX)
    found = []
    for first in range(0, len(asins), ASINS_PER_QUERY):
        query = {"query": {"terms": {"asin": asins[first : first + ASINS_PER_QUERY]}}}
        found += [hit["_source"] for hit in helpers.scan(client, query, index=topics.ALERTS_INDEX)]
    return found
