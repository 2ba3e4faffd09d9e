"""Enrichment stage throughput against the seed's per-message loop and against the raw floor.

Three measurements on the real Kafka and Elasticsearch, each starting from empty pipeline
topics and indices with the same sample messages on raw.keepa_updates and a fresh consumer group:

- baseline — the seed's consumer loop, written out below: ``poll(1.0)`` one message,
  ``json.loads``, one Elasticsearch ``index`` call, produce, ``commit()``, per message. It also
  calls ``validate_raw_update`` + ``enrich`` so it does the same work per record as the stage;
  the comparison is about how the records move, not about skipping work.
- ours — ``StageRunner(ENRICHMENT, …).run(group, plan_ranges(...))``, exactly what the
  enrichment job runs.
- floor — consume the same messages in batches and bulk-index them unchanged with
  ``elasticsearch.helpers.bulk`` (no validation, no enrichment, nothing produced downstream):
  the cheapest way to move these bytes from Kafka into Elasticsearch.

Run alone: ``python -m bench.enrichment [--n 200000] [--baseline-n 5000] [--quick]``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from elasticsearch import helpers

from arbitrage.cli.reset import delete_groups
from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import FeeConfig, load_fee_config
from arbitrage.domain.messages.validation import validate_raw_update
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.domain.topics import PRODUCTS_ENRICHED, PRODUCTS_INDEX, RAW_UPDATES
from arbitrage.engine.ranges import plan_ranges
from arbitrage.engine.runner import StageRunner
from arbitrage.engine.stage_setup import StageSetup
from arbitrage.settings import Settings
from bench import data
from bench.common import (
    PeakRss,
    Row,
    Services,
    connect,
    log,
    parser,
    produce_messages,
    report,
    reset_pipeline,
    unique_group,
)

BENCHMARK = "enrichment"
DEFAULT_N = 200_000
DEFAULT_BASELINE_N = 5_000
QUICK_N = 2_000
QUICK_BASELINE_N = 200
BATCH_SIZE = 5_000
# The floor writes the raw updates, which do not fit the strict `products` mapping, into an
# index of their own with the same settings (1 shard, no replica) and dynamic mapping.
FLOOR_INDEX = topics.tool_name("bench-floor-raw-updates")
IDLE_TIMEOUT_S = 60.0

TARGET_VS_BASELINE = 30.0
# Issue 11: the stage at 0.9× the raw floor, measured in the same run.
TARGET_VS_FLOOR = 0.9


def prepare(services: Services, n: int) -> None:
    """Empty topics and indices, then put the first n sample messages on raw.keepa_updates."""
    reset_pipeline(services, extra_indices=[FLOOR_INDEX])
    started = time.perf_counter()
    produced = sum(
        produce_messages(services.kafka, RAW_UPDATES, chunk) for chunk in data.iter_raw_chunks(n)
    )
    log(f"produced {produced:,} raw updates in {time.perf_counter() - started:.1f} s")


# --------------------------------------------------------------------------- baseline


def naive_loop(services: Services, fees: FeeConfig, n: int) -> float:
    """The seed's loop, one message at a time; returns seconds from the first message on.

    The clock starts at the first message so the consumer group's join (a few seconds with
    ``subscribe``) is not charged to the loop.
    """
    group = unique_group("naive")
    consumer = Consumer(
        {
            **services.kafka.client_config(),
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    producer = Producer(services.kafka.client_config())
    es = services.es.client()
    consumer.subscribe([RAW_UPDATES])
    processed = 0
    started: float | None = None
    idle_since = time.monotonic()
    try:
        while processed < n:
            msg = consumer.poll(1.0)
            if msg is None:
                if time.monotonic() - idle_since > IDLE_TIMEOUT_S:
                    raise RuntimeError(f"naive loop got nothing for {IDLE_TIMEOUT_S:.0f} s")
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(msg.error())
            if started is None:
                started = time.perf_counter()
            idle_since = time.monotonic()
            doc = json.loads(msg.value())
            product = enrich(validate_raw_update(doc), fees)
            es.index(index=PRODUCTS_INDEX, id=product["asin"], document=product)
            producer.produce(PRODUCTS_ENRICHED, key=msg.key(), value=json.dumps(product).encode())
            producer.poll(0)
            consumer.commit()  # the client's default: asynchronous, current positions
            processed += 1
        producer.flush(60)
    finally:
        consumer.close()
        delete_groups(services.kafka, [group])
    assert started is not None
    return time.perf_counter() - started


# --------------------------------------------------------------------------- ours


def run_stage(services: Services, fees: FeeConfig, n: int, batch_size: int) -> float:
    group = unique_group("enrichment")
    runner = StageRunner(
        StageSetup(ENRICHMENT, services.es, fees, batch_size=batch_size),
        services.kafka,
        logger=logging.getLogger("bench.stage"),
        idle_timeout_s=IDLE_TIMEOUT_S,
    )
    try:
        stats = runner.run(group, plan_ranges(services.kafka.lag(group, RAW_UPDATES)))
    finally:
        delete_groups(services.kafka, [group])
    if stats.records_in != n or stats.indexed != n or stats.to_dlq:
        raise RuntimeError(
            f"the stage read {stats.records_in}, indexed {stats.indexed} and sent "
            f"{stats.to_dlq} to the DLQ; expected {n} clean records"
        )
    return stats.seconds


# --------------------------------------------------------------------------- floor


def raw_floor(services: Services, n: int, batch_size: int, parse: bool = False) -> float:
    """Batches off Kafka, bulk-indexed as they are (id = key), committed per batch.

    The documents go as the raw bytes off the topic; with ``parse`` they are ``json.loads``ed
    first and the client serialises them again (helpers.bulk's usual input).
    """
    kafka = services.kafka
    client = services.es.client()
    group = unique_group("floor")
    ranges = plan_ranges(kafka.lag(group, RAW_UPDATES))
    indexed = 0
    started = time.perf_counter()
    try:
        for span in ranges:
            consumer = kafka.consumer(group)
            consumer.assign([TopicPartition(RAW_UPDATES, span.partition, span.start)])
            next_offset = span.start
            try:
                while next_offset < span.end:
                    wanted = min(batch_size, span.end - next_offset)
                    messages = [
                        m
                        for m in consumer.consume(num_messages=wanted, timeout=1.0)
                        if m.error() is None
                    ]
                    if not messages:
                        continue
                    actions = [
                        {
                            "_index": FLOOR_INDEX,
                            "_id": m.key().decode(),
                            "_source": json.loads(m.value()) if parse else m.value(),
                        }
                        for m in messages
                    ]
                    done, _ = helpers.bulk(client, actions, chunk_size=len(actions))
                    indexed += done
                    next_offset = messages[-1].offset() + 1
                    consumer.commit(
                        offsets=[TopicPartition(RAW_UPDATES, span.partition, next_offset)],
                        asynchronous=False,
                    )
            finally:
                consumer.close()
    finally:
        delete_groups(kafka, [group])
    seconds = time.perf_counter() - started
    if indexed != n:
        raise RuntimeError(f"the floor indexed {indexed} of {n} messages")
    return seconds


# --------------------------------------------------------------------------- the rows


def run(
    services: Services,
    n: int = DEFAULT_N,
    baseline_n: int = DEFAULT_BASELINE_N,
    batch_size: int = BATCH_SIZE,
    judge: bool = True,
    repeats: int = 2,
) -> list[Row]:
    fees = load_fee_config(Settings.from_env().fees_file)
    data.ensure_inputs(max(n, baseline_n), log)

    log(f"enrichment baseline: naive loop over {baseline_n:,} messages")
    prepare(services, baseline_n)
    with PeakRss() as rss:
        naive_s = naive_loop(services, fees, baseline_n)
    baseline = Row(
        BENCHMARK,
        "baseline: seed's loop — poll(1.0) → json.loads → validate+enrich → es.index → "
        "produce → commit(), per message",
        baseline_n,
        naive_s,
        rss.mib,
        ratio=1.0,
        note="same validation+enrichment per record as ours; clock starts at the first "
        "message (group join excluded)",
    )

    # The floor and ours alternate, `repeats` times each, and each keeps its fastest run:
    # other work on a shared 2-core machine slows single runs by a third or more at random.
    floor_runs: list[tuple[float, float | None]] = []
    parsed_runs: list[tuple[float, float | None]] = []
    ours_runs: list[tuple[float, float | None]] = []
    for attempt in range(1, repeats + 1):
        for parse, results in ((False, floor_runs), (True, parsed_runs)):
            kind = "parsed documents" if parse else "raw bytes"
            log(f"enrichment floor ({attempt}/{repeats}): helpers.bulk of {kind}, {n:,} messages")
            prepare(services, n)
            with PeakRss() as rss:
                seconds = raw_floor(services, n, batch_size, parse=parse)
            results.append((seconds, rss.mib))
        log(f"enrichment ours ({attempt}/{repeats}): StageRunner over {n:,} messages")
        prepare(services, n)
        with PeakRss() as rss:
            seconds = run_stage(services, fees, n, batch_size)
        ours_runs.append((seconds, rss.mib))
    floor_s, floor_rss = min(floor_runs)
    parsed_s, parsed_rss = min(parsed_runs)
    ours_s, ours_rss = min(ours_runs)

    def runs(results: list[tuple[float, float | None]]) -> str:
        rates = " / ".join(f"{n / seconds:,.0f}" for seconds, _ in results)
        return f"best of {len(results)} runs ({rates} records/s)" if len(results) > 1 else ""

    floor = Row(
        BENCHMARK,
        f"floor: consume batches of {batch_size:,} → helpers.bulk raw bytes unchanged "
        "(id = ASIN) → commit",
        n,
        floor_s,
        floor_rss,
        ratio=1.0,
        note=f"no validation, enrichment or produce; index {FLOOR_INDEX} (dynamic mapping); "
        + runs(floor_runs),
    )
    ours_rps = n / ours_s
    vs_baseline = ours_rps / (baseline.records_per_s or 1)
    vs_floor = ours_rps / (floor.records_per_s or 1)
    vs_parsed = ours_rps / (n / parsed_s)
    rows = [
        baseline,
        Row(
            BENCHMARK,
            f"ours: StageRunner('enrichment').run(group, plan_ranges(...)), batch {batch_size:,}",
            n,
            ours_s,
            ours_rss,
            ratio=vs_baseline,
            target=f"≥ {TARGET_VS_BASELINE:.0f}× baseline",
            met=vs_baseline >= TARGET_VS_BASELINE if judge else None,
            note="validate, enrich, bulk-index `products`, produce products.enriched, commit; "
            + runs(ours_runs),
        ),
        floor,
        Row(
            BENCHMARK,
            "ours vs the raw floor (same runs as above)",
            n,
            ours_s,
            ours_rss,
            ratio=vs_floor,
            target=f"≥ {TARGET_VS_FLOOR}× floor",
            met=vs_floor >= TARGET_VS_FLOOR if judge else None,
        ),
        Row(
            BENCHMARK,
            "context, not the target: floor with parsed documents (json.loads → dict → "
            "helpers.bulk, the client serialises again)",
            n,
            parsed_s,
            parsed_rss,
            note=f"ours ÷ this floor = {vs_parsed:.2f}×; " + runs(parsed_runs),
        ),
    ]
    reset_pipeline(services, extra_indices=[FLOOR_INDEX])
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.enrichment", __doc__.splitlines()[0])
    cli.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"messages for ours and the floor (default {DEFAULT_N:,}; --quick {QUICK_N:,})",
    )
    cli.add_argument(
        "--baseline-n",
        type=int,
        default=None,
        help=f"messages for the naive "
        f"loop (default {DEFAULT_BASELINE_N:,}; --quick {QUICK_BASELINE_N:,})",
    )
    cli.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    cli.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="runs of ours and of the floor, "
        "alternating; the fastest of each counts (default 2; --quick 1)",
    )
    args = cli.parse_args(argv)
    started = time.perf_counter()
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    baseline_n = args.baseline_n or (QUICK_BASELINE_N if args.quick else DEFAULT_BASELINE_N)
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    repeats = args.repeats or (1 if args.quick else 2)
    rows = run(services, n, baseline_n, args.batch_size, judge=not args.quick, repeats=repeats)
    report(
        BENCHMARK,
        rows,
        started,
        " ".join(["python -m bench.enrichment", *(argv or sys.argv[1:])]),
        write=not args.no_write,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
