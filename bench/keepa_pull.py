"""Keepa pull: parsing and producing rate from the sample, and what a Keepa plan allows.

- The sample file for N products (default 50 000; written once under the input cache) is
  loaded by ``KeepaSampleSource`` (gunzip + JSON; timed on its own, it is a one-off per run).
- parse — ``iter_pull`` over all N ASINs and the configured markets: one ``fetch_batch`` per
  100 ASINs per market, Keepa's product parsing, one merged raw update per ASIN.
- parse + produce — the same loop the ``keepa_pull`` asset runs: each update ``encode``d and
  produced to raw.keepa_updates with the pipeline's producer, flushed and checked at the end.
- token arithmetic — a live pull is bounded by Keepa's token refill, not by this code. The
  client (resources/keepa.py) sends one ``/product`` request per market with ``buybox=1`` and
  ``stats``, ``history=0``; Keepa charges 1 token per ASIN per request plus 2 per product for
  ``buybox`` (sample_generator.TOKENS_PER_PRODUCT = 3; ``stats`` and ``history=0`` add nothing).
  So one ASIN costs 3 tokens per market per pull, and a plan of T tokens/minute refreshes
  T × 60 / (3 × markets) ASINs an hour.

Run alone: ``python -m bench.keepa_pull [--n 50000] [--quick]``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from arbitrage.clients.keepa_pull import iter_pull
from arbitrage.clients.keepa_sources import KeepaSampleSource
from arbitrage.domain.markets import parse_market_list
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.topics import RAW_UPDATES
from arbitrage.settings import Settings
from bench import data
from bench.common import (
    PeakRss,
    Row,
    Services,
    connect,
    log,
    parser,
    report,
    reset_pipeline,
)
from tools import sample_generator
from tools.sample_generator import DEFAULT_PULLED_AT, TOKENS_PER_PRODUCT, build_sample_document

BENCHMARK = "keepa pull"
DEFAULT_N = 50_000
QUICK_N = 500
PLANS_TOKENS_PER_MINUTE = (20, 60, 250, 1000)
SCHEDULE_MINUTES = 15


def sample_file(n: int) -> Path:
    """A Keepa sample of n products (gzip JSON, the bundled sample's format), built once."""
    source = Path(sample_generator.__file__ or "").read_bytes()
    key = hashlib.sha256(source).hexdigest()[:12]
    path = data.cache_root() / f"keepa-sample-n{n}-{key}.json.gz"
    if not path.exists():
        started = time.perf_counter()
        document = build_sample_document(n)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        # Level 1: this file is read, not shipped; the format is what load_sample_document reads.
        with gzip.open(partial, "wt", encoding="utf-8", compresslevel=1) as handle:
            json.dump(document, handle, separators=(",", ":"), ensure_ascii=False)
        partial.replace(path)
        log(f"wrote a {n:,}-product Keepa sample in {time.perf_counter() - started:.0f} s")
    return path


def token_rows(markets: Sequence[str]) -> list[Row]:
    per_asin = TOKENS_PER_PRODUCT * len(markets)
    rows = []
    for tokens_per_minute in PLANS_TOKENS_PER_MINUTE:
        per_hour = tokens_per_minute * 60 / per_asin
        per_pull = tokens_per_minute * SCHEDULE_MINUTES / per_asin
        rows.append(
            Row(
                BENCHMARK,
                f"Keepa plan {tokens_per_minute:,} tokens/min → {per_hour:,.0f} ASINs/hour "
                f"over {len(markets)} markets",
                None,
                None,
                note=f"{per_asin} tokens per ASIN per pull ({TOKENS_PER_PRODUCT} × "
                f"{','.join(markets)}); a {SCHEDULE_MINUTES}-min schedule refreshes "
                f"{per_pull:,.0f} ASINs per pull",
            )
        )
    return rows


def run(services: Services, n: int = DEFAULT_N) -> list[Row]:
    markets = parse_market_list(Settings.from_env().keepa_markets)
    path = sample_file(n)
    logger = logging.getLogger("bench.keepa")
    reset_pipeline(services)

    source = KeepaSampleSource(path)
    started = time.perf_counter()
    asins = source.asins()
    load_s = time.perf_counter() - started

    log(f"keepa pull: parsing {len(asins):,} ASINs × {len(markets)} markets")
    with PeakRss() as rss:
        started = time.perf_counter()
        parsed = sum(1 for _ in iter_pull(source, asins, markets, DEFAULT_PULLED_AT, logger))
        parse_s = time.perf_counter() - started
    parse_rss = rss.mib

    log("keepa pull: parsing and producing to raw.keepa_updates")
    with PeakRss() as rss:
        started = time.perf_counter()
        with services.kafka.producer() as producer:
            for update in iter_pull(source, asins, markets, DEFAULT_PULLED_AT, logger):
                producer.produce(RAW_UPDATES, update["asin"], encode(update))
        pull_s = time.perf_counter() - started
    produced = producer.report.delivered
    if produced != parsed:
        raise RuntimeError(f"produced {produced} of {parsed} raw updates")
    reset_pipeline(services)
    return [
        Row(
            BENCHMARK,
            "load the sample file (KeepaSampleSource: gunzip + JSON, all markets)",
            n,
            load_s,
            note=f"once per run; {path.stat().st_size / 2**20:.0f} MiB gzip",
        ),
        Row(
            BENCHMARK,
            "parse: iter_pull (fetch_batch per 100 ASINs per market, parse, merge)",
            parsed,
            parse_s,
            parse_rss,
            note=f"{len(markets)} markets; RSS includes the loaded sample",
        ),
        Row(
            BENCHMARK,
            "parse + produce: iter_pull → encode → produce raw.keepa_updates → flush",
            produced,
            pull_s,
            rss.mib,
            note="what the keepa_pull asset runs, delivery reports checked",
        ),
        *token_rows(markets),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.keepa_pull", __doc__.splitlines()[0])
    cli.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"products in the sample (default {DEFAULT_N:,}; --quick {QUICK_N:,})",
    )
    args = cli.parse_args(argv)
    started = time.perf_counter()
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    rows = run(services, n)
    command = " ".join(["python -m bench.keepa_pull", *(argv or sys.argv[1:])])
    report("keepa_pull", rows, started, command, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
