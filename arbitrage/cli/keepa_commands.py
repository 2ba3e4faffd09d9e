"""The Keepa commands: what the tokens bought (``arbitrage tokens``, the token ledger) and what
the next hour's would buy (``arbitrage plan``, the planner)."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, datetime

from arbitrage.cli.terminal import table
from arbitrage.clients import token_planning as planning
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.clients.keepa_ledger import spend_by_hour
from arbitrage.clients.keepa_sources import KeepaHttpClient
from arbitrage.domain.discovery_config import load_discovery_config
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.token_plan import PlanConfig, plan_hour
from arbitrage.settings import KEEPA_KEY_ENV, Settings


def cmd_tokens(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    """The token ledger per hour (Keepa's time, UTC) and purpose, and the total."""
    spends = spend_by_hour(es, 0, 2**62)
    if args.hours is not None and spends:
        newest = max(s.hour_ms for s in spends)
        spends = [s for s in spends if s.hour_ms > newest - args.hours * 3_600_000]
    rows = [
        [
            datetime.fromtimestamp(s.hour_ms / 1000, UTC).strftime("%Y-%m-%d %H:00"),
            s.purpose,
            s.requests,
            s.tokens,
        ]
        for s in spends
    ]
    print(table(["HOUR (UTC)", "PURPOSE", "REQUESTS", "TOKENS"], rows))
    total = sum(s.tokens for s in spends)
    print(f"\n{total} tokens in {sum(s.requests for s in spends)} Keepa requests")
    return 0


def cmd_plan(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    """What the next hour's Keepa tokens would buy, by purpose and market, and why."""
    settings: Settings = args.settings
    if settings.keepa_source != "api" or not settings.keepa_api_key_set:
        print(
            "error: the plan reads Keepa's token status: set KEEPA_SOURCE=api and KEEPA_API_KEY "
            "(e.g. `. .devservices/keepa-sim.env` for the local simulator)",
            file=sys.stderr,
        )
        return 2
    client = KeepaHttpClient(os.environ[KEEPA_KEY_ENV], base_url=settings.keepa_api_url)
    status = client.token_status()
    if status.timestamp_ms is None or status.tokens_left is None or status.refill_rate is None:
        print("error: Keepa's /token answer lacked its time or balance", file=sys.stderr)
        return 2
    markets = tuple(m.strip() for m in settings.keepa_markets.split(",") if m.strip())
    reserve = settings.keepa_reserve_tokens if args.reserve is None else args.reserve
    if reserve < 0:
        print("error: --reserve cannot be negative", file=sys.stderr)
        return 2
    config = PlanConfig(markets=markets, reserve_tokens=reserve)
    now = status.timestamp_ms
    found = planning.candidates(es, now, load_fee_config(settings.fees_file), config)
    due = planning.due_by_minute(load_discovery_config(settings.discovery_file), now)
    outlook = plan_hour(now, status.tokens_left, status.refill_rate, found, due, config)
    print(
        f"Keepa: {status.tokens_left} tokens, {status.refill_rate}/min; {len(found)} ASINs "
        f"tracked; reserve {config.reserve_tokens}; the next {outlook.minutes} minutes:"
    )
    rows = [
        [purpose, outlook.refreshes_by_purpose.get(purpose, ""), tokens]
        for purpose, tokens in outlook.tokens_by_purpose.most_common()
    ]
    print(table(["PURPOSE", "REFRESHES", "TOKENS"], rows))
    print()
    print(table(["MARKET", "TOKENS"], sorted(outlook.tokens_by_market.items())))
    print(f"\n{outlook.spent} of {outlook.granted} tokens granted would be spent")
    return 0
