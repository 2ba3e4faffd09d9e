"""Latency through Dagster: a raw update produced → its enriched product → its alerts.

Starts ``dagster dev`` (webserver + daemon) on a throwaway DAGSTER_HOME with the repository's
dagster.yaml, turns on the two lag sensors (``dagster sensor start --start-all``; schedules
stay off, so no Keepa pull interferes), then, round after round, produces a slice of sample
raw updates that holds planted arbitrage opportunities and waits until every product is on
products.enriched and every expected alert (computed with the domain functions) is on
arbitrage.alerts. Latency = the Kafka timestamp of the downstream message (set when the stage
run produced it) minus the moment the raw updates were acknowledged by the broker.

The first round also waits for the daemon and the code location to come up; it is reported
in the notes, not in the figures. Each later round is a fresh slice of products (new ASINs),
so its alerts are new and nothing is de-duplicated away.

Run alone: ``python -m bench.latency [--rounds 3] [--per-round 200] [--quick]``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from confluent_kafka import TopicPartition

from bench import data
from bench.common import (
    Row,
    Services,
    connect,
    log,
    parser,
    produce_messages,
    report,
    reset_pipeline,
)
from devservices.dagster_dev import DagsterDev
from devservices.dagster_instance import fresh_storage
from pipelines.enrichment import enrich
from pipelines.fee_config import load_fee_config
from pipelines.fee_model import detect_alerts
from pipelines.messages.validation import parse_raw_update
from pipelines.topics import ARBITRAGE_ALERTS, PRODUCTS_ENRICHED, RAW_UPDATES
from resources.settings import Settings

BENCHMARK = "latency"
REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROUNDS = 3
DEFAULT_PER_ROUND = 200
QUICK_ROUNDS = 1
QUICK_PER_ROUND = 60
# The daemon, the code server and the first runs each import Dagster and the code: minutes
# on a loaded 2-core machine are possible for the first round.
FIRST_ROUND_TIMEOUT_S = 300.0
ROUND_TIMEOUT_S = 180.0
DAGSTER = (sys.executable, "-m", "dagster")


def sensors_built() -> bool:
    """Whether the lag sensors exist and are part of the definitions."""
    try:
        from pipelines.definitions import defs

        names = {sensor.name for sensor in defs.sensors or []}
    except Exception:  # an import error in code under construction counts as "not built"
        return False
    return {"enrichment_sensor", "arbitrage_sensor"} <= names


def not_measured(reason: str) -> list[Row]:
    return [Row(BENCHMARK, f"latency: not measured ({reason})", None, None, rate=False)]


@contextlib.contextmanager
def dagster_dev(home: Path) -> Iterator[dict[str, str]]:
    """``dagster dev`` with the sensors on, always stopped on exit."""
    env = {
        **os.environ,
        "ARBITRAGE_AUTOMATION": "on",
        # The schedules are on too but cannot fire during a measurement (1 January only).
        "KEEPA_PULL_CRON": "0 0 1 1 *",
        "ARBITRAGE_CHECKS_CRON": "0 0 1 1 *",
    }
    # Storage of its own: no run or sensor state of an earlier measurement carries over.
    with fresh_storage(env) as storage:
        dev = DagsterDev(home, {**env, **storage})
        try:
            dev.start()
            log(f"dagster dev (port {dev.port}) running; sensors on")
            yield dev.env
        finally:
            dev.stop()


def _end_offsets(services: Services, topic: str) -> dict[int, int]:
    return {p: high for p, (_, high) in services.kafka.watermarks(topic).items()}


def _collect(
    services: Services,
    starts: dict[str, dict[int, int]],
    wanted: dict[str, set[bytes]],
    expected: dict[str, int],
    timeout_s: float,
) -> dict[str, list[int]]:
    """Kafka timestamps (ms) of the messages keyed by wanted ASINs, per topic, until each topic
    has its expected count (or the timeout)."""
    consumer = services.kafka.consumer(
        "arbitrage-bench.latency.reader", **{"enable.partition.eof": False}
    )
    found: dict[str, list[int]] = {topic: [] for topic in starts}
    consumer.assign(
        [
            TopicPartition(topic, partition, offset)
            for topic, offsets in starts.items()
            for partition, offset in offsets.items()
        ]
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if all(len(found[t]) >= expected[t] for t in found):
                break
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None and message.key() in wanted[message.topic()]:
                    found[message.topic()].append(message.timestamp()[1])
    finally:
        consumer.close()
    return found


def _round(
    services: Services, messages: list[tuple[bytes, bytes]], timeout_s: float
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Produce one slice; latencies (s) per downstream topic, and the counts expected."""
    fees = load_fee_config(Settings.from_env().fees_file)
    products = [enrich(parse_raw_update(value), fees) for _, value in messages]
    alerts = detect_alerts(products, fees, "2026-01-01T00:00:00.000Z")
    expected = {PRODUCTS_ENRICHED: len(messages), ARBITRAGE_ALERTS: len(alerts)}
    wanted = {
        PRODUCTS_ENRICHED: {key for key, _ in messages},
        ARBITRAGE_ALERTS: {alert["asin"].encode() for alert in alerts},
    }
    starts = {topic: _end_offsets(services, topic) for topic in expected}
    produce_messages(services.kafka, RAW_UPDATES, messages)
    acknowledged_ms = time.time() * 1000  # the producer context flushed: all acknowledged
    found = _collect(services, starts, wanted, expected, timeout_s)
    latencies = {
        topic: [max(0.0, (ts - acknowledged_ms) / 1000) for ts in stamps]
        for topic, stamps in found.items()
    }
    return latencies, expected


def run(
    services: Services, rounds: int = DEFAULT_ROUNDS, per_round: int = DEFAULT_PER_ROUND
) -> list[Row]:
    if not sensors_built():
        return not_measured("sensors not yet built")
    reset_pipeline(services)
    slices = data.raw_messages(per_round * (rounds + 1))
    results: list[dict[str, list[float]]] = []
    first_round_s: float | None = None
    with tempfile.TemporaryDirectory(prefix="bench-dagster-") as home, dagster_dev(Path(home)):
        for index in range(rounds + 1):
            chunk = slices[index * per_round : (index + 1) * per_round]
            started = time.perf_counter()
            timeout = FIRST_ROUND_TIMEOUT_S if index == 0 else ROUND_TIMEOUT_S
            latencies, expected = _round(services, chunk, timeout)
            for topic, count in expected.items():
                if len(latencies[topic]) < count:
                    log_tail = (Path(home) / "dagster-dev.log").read_text()[-1500:]
                    raise RuntimeError(
                        f"round {index}: {len(latencies[topic])} of {count} messages reached "
                        f"{topic} within {timeout:.0f} s; dagster dev log ends:\n{log_tail}"
                    )
            if index == 0:
                first_round_s = time.perf_counter() - started
                log(f"latency: warm-up round done in {first_round_s:.0f} s")
            else:
                results.append(latencies)
                log(f"latency: round {index} of {rounds} done")
    reset_pipeline(services)
    rows = []
    for topic, what in (
        (PRODUCTS_ENRICHED, "raw update produced → enriched product on products.enriched"),
        (ARBITRAGE_ALERTS, "raw update produced → alert on arbitrage.alerts"),
    ):
        values = sorted(v for result in results for v in result[topic])
        median = statistics.median(values)
        p95 = values[min(len(values) - 1, int(0.95 * len(values)))]
        rows.append(
            Row(
                BENCHMARK,
                f"latency p50: {what}",
                len(values),
                median,
                rate=False,
                note=f"p95 {p95:.1f} s, max {values[-1]:.1f} s over {rounds} rounds of "
                f"{per_round} updates; dagster dev, lag sensors, queued runs; first round "
                f"(daemon start) {first_round_s:.0f} s",
            )
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.latency", __doc__.splitlines()[0])
    cli.add_argument(
        "--rounds",
        type=int,
        default=None,
        help=f"measured rounds (default {DEFAULT_ROUNDS}; --quick {QUICK_ROUNDS})",
    )
    cli.add_argument(
        "--per-round",
        type=int,
        default=None,
        help=f"raw updates per round (default {DEFAULT_PER_ROUND}; --quick {QUICK_PER_ROUND})",
    )
    args = cli.parse_args(argv)
    started = time.perf_counter()
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else DEFAULT_ROUNDS)
    per_round = args.per_round or (QUICK_PER_ROUND if args.quick else DEFAULT_PER_ROUND)
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    rows = run(services, rounds, per_round)
    command = " ".join(["python -m bench.latency", *(argv or sys.argv[1:])])
    report(BENCHMARK, rows, started, command, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
