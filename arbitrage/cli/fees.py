"""``arbitrage fees calibrate``: the fee model's lines beside Amazon's own estimate for a sample
of routes (SP-API getMyFeesEstimates with the seller's credentials), written as a JSON report
and shown as a table (docs/fees.md, "Amazon's estimate as the check")."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arbitrage.cli.terminal import printable, table
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.sp_api import SpApiCredentials, SpApiError, SpApiFeesClient
from arbitrage.domain import topics
from arbitrage.domain.fee_calibration import Route, all_estimates, best_route, calibrate
from arbitrage.domain.fee_config import FeeConfig, FeeConfigError, load_fee_config
from arbitrage.domain.lifecycle import OPEN
from arbitrage.domain.money import format_minor
from arbitrage.domain.sp_api_fees import DEFAULT_RATE_PER_S, MAX_ITEMS_PER_REQUEST
from arbitrage.settings import Settings

MAX_SAMPLE = 2_000
# What the fee model reads of a product (arbitrage/domain/fee_model/reference.py).
_PRODUCT_FIELDS = (
    "asin",
    "title",
    "markets",
    "package",
    "category",
    "source_timestamp",
    "source_timestamp_ms",
)
# The same sample for the same data: a seller compares one report with the next.
SAMPLE_SEED = 20261207


def sample_routes(es: ElasticsearchClient, config: FeeConfig, size: int) -> list[Route]:
    """``size`` routes: the open opportunities, most profitable first (what a seller acts on),
    then products without one on their best route (a fixed pseudo-random pick)."""
    es.health()
    es.refresh(topics.ALERTS_INDEX)
    opportunities = es.search_sources(
        topics.ALERTS_INDEX,
        {"term": {"status": OPEN}},
        size,
        sort=({"profit_eur_cents": "desc"}, {"alert_id": "asc"}),
    )
    wanted = [(o["asin"], o["buy_market"], o["sell_market"]) for o in opportunities]
    products = es.sources_by_id(
        topics.PRODUCTS_INDEX, list(dict.fromkeys(a for a, _, _ in wanted)), _PRODUCT_FIELDS
    )
    routes = [Route(products[a], b, s) for a, b, s in wanted if a in products]  # type: ignore[arg-type]
    if len(routes) < size:
        taken = {r.asin for r in routes}
        found = es.client().search(
            index=topics.PRODUCTS_INDEX,
            size=min(MAX_SAMPLE, 4 * size),
            query={
                "function_score": {
                    "query": {"bool": {"must_not": {"ids": {"values": sorted(taken)}}}},
                    "random_score": {"seed": SAMPLE_SEED, "field": "_seq_no"},
                }
            },
            source=list(_PRODUCT_FIELDS),
        )
        for hit in found["hits"]["hits"]:
            route = best_route(hit["_source"], config)
            if route is not None:
                routes.append(route)
            if len(routes) == size:
                break
    return routes


def _report_rows(report: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for line in report["lines"]:
        behind = ", ".join(
            f"{w['asin']} {w['route']} ({format_minor(w['difference'], 'EUR')})"
            for w in line["worst"][:3]
        )
        rows.append(
            [
                line["line"],
                line["compared"],
                line["exact"],
                f"{line['mean_difference'] / 100:+.2f}",
                f"{line['mean_absolute_difference'] / 100:.2f}",
                f"{line['worst_difference'] / 100:+.2f}",
                behind or "—",
            ]
        )
    return rows


def cmd_fees_calibrate(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    settings: Settings = args.settings
    if not 1 <= args.sample <= MAX_SAMPLE:
        print(f"error: --sample takes 1 to {MAX_SAMPLE} routes", file=sys.stderr)
        return 2
    fees_file = Path(args.fees) if args.fees else settings.fees_file
    try:
        config = load_fee_config(fees_file)
        credentials = SpApiCredentials.from_env()
    except (FeeConfigError, SpApiError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    routes = sample_routes(es, config, args.sample)
    if not routes:
        print("error: no product to check: the products index is empty", file=sys.stderr)
        return 1
    asked = all_estimates(routes, config)
    requests = -(-len(asked) // MAX_ITEMS_PER_REQUEST)
    print(
        f"{len(routes)} routes, {len(asked)} fee estimates in {requests} requests to "
        f"{settings.sp_api_url} (about {requests / DEFAULT_RATE_PER_S:.0f} s at Amazon's "
        f"{DEFAULT_RATE_PER_S:g} requests/s)",
        flush=True,
    )

    def progress(done: int, total: int) -> None:
        print(f"  {done}/{total} estimates", flush=True)

    try:
        with SpApiFeesClient(credentials, settings.sp_api_url, settings.sp_api_lwa_url) as client:
            answers = client.estimate(asked, progress=progress)
            stats = client.stats
    except SpApiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = calibrate(routes, answers, config).as_dict()
    report.update(
        fee_model=str(fees_file),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        requests=stats.requests,
        throttled=stats.throttled,
    )
    out = Path(args.out or f"fee-calibration-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json")
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    headers = [
        "LINE",
        "ROUTES",
        "EXACT",
        "MEAN",
        "MEAN |Δ|",
        "WORST",
        "WORST ROUTES (model − Amazon)",
    ]
    print(table(headers, _report_rows(report)))
    print(
        f"\n{report['routes_compared']} of {report['routes_asked']} routes compared; EUR, "
        "model − Amazon (negative: the model charges less than Amazon)"
    )
    for item in report["not_compared"][:10]:
        print(printable(f"not compared: {item['asin']} {item['route']}: {item['why']}"))
    if report["other_fee_types"]:
        kinds = ", ".join(f"{k} ×{n}" for k, n in sorted(report["other_fee_types"].items()))
        print(printable(f"fee types the model has no line for (in the total): {kinds}"))
    print(f"report: {out}")
    return 0


def add_fees_commands(commands: Any) -> None:
    fees = commands.add_parser("fees", help="the fee model's checks").add_subparsers(
        dest="fees_command", required=True
    )
    calibrate_parser = fees.add_parser(
        "calibrate",
        help="the model's fee lines beside Amazon's estimate (SP-API) for a sample of routes",
    )
    calibrate_parser.add_argument(
        "--sample", type=int, default=100, help="routes to check (default 100)"
    )
    calibrate_parser.add_argument(
        "--fees", help="the fee model file (default: ARBITRAGE_FEES_FILE's)"
    )
    calibrate_parser.add_argument(
        "--out", help="the JSON report's path (default fee-calibration-<UTC time>.json here)"
    )
    calibrate_parser.set_defaults(run=cmd_fees_calibrate)
