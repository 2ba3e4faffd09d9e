"""Latency through Dagster, hop by hop: a raw update produced → read by enrichment → on
products.enriched → read by arbitrage → its alert on arbitrage.alerts; warm and cold.

Starts Dagster's code server, webserver and daemon (devservices.dagster_processes) on a
throwaway DAGSTER_HOME and storage with the repository's dagster.yaml and the two lag sensors
on (the schedules cannot fire: 1 January only).

- **Warm**: a steady stream of ``--rate`` updates per second for ``--seconds``, each a product
  not seen before (so each alert is new). The sensors' runs follow their partitions, so after
  the first seconds every update meets a live run. For each update: its Kafka timestamp
  (produced), the ``arbitrage-read-at-ms`` header the stages put on their outputs (read by
  the stage), and the moment this benchmark's read_committed reader saw the output (visible:
  the stage's transaction committed). The same window gives the runs per partition and the
  event-log rows per minute (rows of the instance's ``event_logs`` table).
- **Cold**: ``--cold-rounds`` times, wait until no stage run is in flight (the runs have been
  idle for ARBITRAGE_RUN_IDLE_S, set to ``COLD_IDLE_S`` here), then produce a burst: the
  latency includes the sensor's tick, the run queue, the run's process start and its setup.

Run alone: ``python -m bench.latency [--rate 5] [--seconds 240] [--cold-rounds 5] [--quick]``;
the issue's steady-stream check is ``--rate 1 --seconds 600 --cold-rounds 0``.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import sqlalchemy as db  # Dagster's own dependency: counts rows of its event_logs table
from confluent_kafka import Consumer, TopicPartition
from dagster._core.storage.tags import TICK_ID_TAG  # the sensor tick that requested a run

from arbitrage.domain import topics
from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.fee_model import detect_alerts
from arbitrage.domain.messages.validation import parse_raw_update
from arbitrage.domain.rules_config import load_rules_config
from arbitrage.domain.topics import ARBITRAGE_ALERTS, PRODUCTS_ENRICHED, RAW_UPDATES
from arbitrage.engine.processors import READ_AT_HEADER
from arbitrage.settings import Settings
from assets.sensors import IN_FLIGHT
from assets.stage_assets import PARTITION_TAG, STAGE_TAG
from bench import data
from bench.common import Row, Services, connect, log, parser, report, reset_pipeline
from devservices.dagster_instance import fresh_storage
from devservices.dagster_processes import DagsterProcesses

BENCHMARK = "latency"
DEFAULT_RATE = 5.0
DEFAULT_SECONDS = 240.0
DEFAULT_COLD_ROUNDS = 5
QUICK_RATE, QUICK_SECONDS, QUICK_COLD_ROUNDS = 2.0, 15.0, 1
COLD_BURST = 20
# About one sample product in sixteen raises an alert: generate this many per alert needed.
POOL_PER_ALERT = 20
# Runs end after this long without records, so the cold rounds do not wait a minute each.
COLD_IDLE_S = 15
# Streamed before the warm window, not measured: the warm-up's runs may have ended (idle) while
# its alerts were on their way, and the window must start with every partition's run live.
LEAD_IN_S = 20.0
# The daemon, the code server and the first runs each import Dagster and the code.
WARM_UP_TIMEOUT_S = 300.0
DRAIN_TIMEOUT_S = 120.0
COLD_TIMEOUT_S = 120.0


def not_measured(reason: str) -> list[Row]:
    return [Row(BENCHMARK, f"latency: not measured ({reason})", None, None, rate=False)]


@contextlib.contextmanager
def dagster_processes(home: Path, idle_s: float = COLD_IDLE_S) -> Iterator[dict[str, str]]:
    """Code server, webserver and daemon with the sensors on, always stopped on exit; yields
    their environment."""
    env = {
        **os.environ,
        "ARBITRAGE_AUTOMATION": "on",
        "ARBITRAGE_RUN_IDLE_S": f"{idle_s:g}",
        "KEEPA_PULL_CRON": "0 0 1 1 *",
        "ARBITRAGE_CHECKS_CRON": "0 0 1 1 *",
        "ARBITRAGE_DIGEST_CRON": "0 0 1 1 *",
    }
    # Storage of its own: no run or sensor state of an earlier measurement carries over.
    with fresh_storage(env) as storage:
        dagster = DagsterProcesses(home, {**env, **storage})
        try:
            dagster.start()
            log(f"Dagster (webserver port {dagster.port}) running; sensors on")
            yield dagster.env
        finally:
            dagster.stop()


@contextlib.contextmanager
def instance_of(env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    """The Dagster instance the processes use (their DAGSTER_HOME and storage variables)."""
    keys = [k for k in env if k == "DAGSTER_HOME" or k.startswith("DAGSTER_POSTGRES")]
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update({k: env[k] for k in keys})
    try:
        with dg.DagsterInstance.get() as instance:
            yield instance
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Seen:
    """An output message as the benchmark's reader saw it."""

    produced_ms: int  # its Kafka timestamp
    read_at_ms: int | None  # when the stage read the batch it came from
    visible_ms: float  # when the reader got it (after the stage's commit)
    partition: int = -1


@dataclass
class Reader:
    """Reads products.enriched and arbitrage.alerts (read_committed) from their ends, keeping
    the first sighting per ASIN."""

    services: Services
    seen: dict[str, dict[bytes, Seen]] = field(
        default_factory=lambda: {PRODUCTS_ENRICHED: {}, ARBITRAGE_ALERTS: {}}
    )
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        consumer = self.services.kafka.consumer(topics.tool_name("bench.latency.reader"))
        consumer.assign(
            [
                TopicPartition(topic, partition, high)
                for topic in self.seen
                for partition, (_, high) in self.services.kafka.watermarks(topic).items()
            ]
        )
        self._thread = threading.Thread(target=self._read, args=(consumer,), daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.stop.set()
        self._thread.join(timeout=30)

    def _read(self, consumer: Consumer) -> None:
        try:
            while not self.stop.is_set():
                for message in consumer.consume(num_messages=500, timeout=0.05):
                    if message.error() is not None or message.key() is None:
                        continue
                    now = time.time() * 1000
                    headers = dict(message.headers() or [])
                    read_at = headers.get(READ_AT_HEADER)
                    self.seen[message.topic()].setdefault(
                        message.key(),
                        Seen(
                            message.timestamp()[1],
                            int(read_at) if read_at else None,
                            now,
                            message.partition(),
                        ),
                    )
        finally:
            consumer.close()

    def wait_for(self, topic: str, keys: set[bytes], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if keys <= self.seen[topic].keys():
                return True
            time.sleep(0.2)
        return False


def expected_alert_keys(messages: Sequence[tuple[bytes, bytes]]) -> set[bytes]:
    settings = Settings.from_env()
    fees = load_fee_config(settings.fees_file)
    rules = load_rules_config(settings.rules_file)
    products = [enrich(parse_raw_update(value), fees) for _, value in messages]
    alerts = detect_alerts(products, fees, "2026-01-01T00:00:00.000Z", rules)
    return {alert["asin"].encode() for alert in alerts}


def stream(
    services: Services, messages: Sequence[tuple[bytes, bytes]], rate: float
) -> dict[bytes, int]:
    """Produce ``messages`` at ``rate`` per second, each on its own; their Kafka timestamps."""
    produced: dict[bytes, int] = {}
    started = time.monotonic()
    with services.kafka.producer() as producer:
        for index, (key, value) in enumerate(messages):
            delay = started + index / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            produced[key] = int(time.time() * 1000)
            producer.produce(RAW_UPDATES, key, value)
    return produced


def percentiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return statistics.median(ordered), p95, ordered[-1]


def hop_rows(
    produced: dict[bytes, int], reader: Reader, alert_keys: set[bytes], note: str
) -> list[Row]:
    enriched, alerts = reader.seen[PRODUCTS_ENRICHED], reader.seen[ARBITRAGE_ALERTS]
    hops: dict[str, list[float]] = {
        "produced → read by enrichment": [],
        "read by enrichment → on products.enriched": [],
        "on products.enriched → read by arbitrage": [],
        "read by arbitrage → alert on arbitrage.alerts": [],
        "produced → alert on arbitrage.alerts (warm)": [],
        "produced → on products.enriched (warm)": [],
    }
    for key, produced_ms in produced.items():
        product = enriched.get(key)
        if product is None or product.read_at_ms is None:
            continue
        hops["produced → read by enrichment"].append(product.read_at_ms - produced_ms)
        hops["read by enrichment → on products.enriched"].append(
            product.visible_ms - product.read_at_ms
        )
        hops["produced → on products.enriched (warm)"].append(product.visible_ms - produced_ms)
        alert = alerts.get(key) if key in alert_keys else None
        if alert is None or alert.read_at_ms is None:
            continue
        # The reader and the stage see the commit at about the same moment; never below 0.
        hops["on products.enriched → read by arbitrage"].append(
            max(0.0, alert.read_at_ms - product.visible_ms)
        )
        hops["read by arbitrage → alert on arbitrage.alerts"].append(
            alert.visible_ms - alert.read_at_ms
        )
        hops["produced → alert on arbitrage.alerts (warm)"].append(alert.visible_ms - produced_ms)
    rows = []
    for hop, values_ms in hops.items():
        if not values_ms:
            continue
        p50, p95, worst = percentiles([v / 1000 for v in values_ms])
        rows.append(
            Row(
                BENCHMARK,
                f"latency p50: {hop}",
                len(values_ms),
                p50,
                rate=False,
                target="p95 ≤ 3 s" if hop.startswith("produced → alert") else "",
                met=p95 <= 3.0 if hop.startswith("produced → alert") else None,
                note=f"p95 {p95:.2f} s, max {worst:.2f} s; {note}",
            )
        )
    return rows


def storage_rows(instance: dg.DagsterInstance, since: float, until: float) -> list[Row]:
    """Stage runs per topic-partition live during the window, and event-log rows per minute."""
    minutes = (until - since) / 60
    runs = Counter[str]()
    for record in instance.get_run_records(dg.RunsFilter(created_before=_utc(until))):
        tag = record.dagster_run.tags.get(PARTITION_TAG)
        if tag and (record.end_time is None or record.end_time >= since):
            runs[tag] += 1
    per_partition = ", ".join(f"{tag} {n}" for tag, n in sorted(runs.items()))
    rows = [
        Row(
            BENCHMARK,
            "stage runs live per topic-partition during the warm window",
            sum(runs.values()),
            None,
            rate=False,
            note=f"{minutes:.1f} min: {per_partition or 'none'}",
        )
    ]
    counted = event_rows_per_minute(instance, since, until)
    if counted is not None:
        total, busiest = counted
        rows.append(
            Row(
                BENCHMARK,
                "event-log rows per minute in the warm window",
                total,
                None,
                rate=False,
                note=f"{total / minutes:.0f} per minute on average, {busiest} in the busiest "
                f"minute, over {minutes:.1f} min (runs, materializations, observations, logs)",
            )
        )
    return rows


def event_rows_per_minute(
    instance: dg.DagsterInstance, since: float, until: float
) -> tuple[int, int] | None:
    """Rows written to the event log in the window, and the most in one minute; None when the
    storage cannot be counted by SQL."""
    storage = instance.event_log_storage
    if not hasattr(storage, "index_connection"):
        return None
    query = db.text(
        "SELECT date_trunc('minute', timestamp) AS minute, count(*) FROM event_logs "
        "WHERE timestamp >= :since AND timestamp < :until GROUP BY minute"
    )
    with storage.index_connection() as connection:
        counts = [
            row[1]
            for row in connection.execute(
                query,
                {
                    "since": _utc(since).replace(tzinfo=None),
                    "until": _utc(until).replace(tzinfo=None),
                },
            )
        ]
    return sum(counts), max(counts, default=0)


def _utc(epoch_s: float) -> datetime:
    return datetime.fromtimestamp(epoch_s, UTC)


def _naive_utc(epoch_s: float) -> datetime:
    """How the event_logs table stores its timestamps."""
    return _utc(epoch_s).replace(tzinfo=None)


def stage_runs_in_flight(instance: dg.DagsterInstance) -> int:
    return sum(
        1
        for record in instance.get_run_records(dg.RunsFilter(statuses=IN_FLIGHT))
        if PARTITION_TAG in record.dagster_run.tags
    )


# The phases of a cold start, in order: the start of the sensor tick that requested each run,
# the run's create time, launch (RUN_STARTING), start (RUN_START: its process has loaded the
# code) and the first record its stage read.
COLD_PHASES = (
    "produced → sensor tick started (daemon loop)",
    "tick started → run created (sensor evaluation)",
    "created → launched (run queue)",
    "launched → started (process start, code load)",
    "started → first record read (resources, consumer)",
)


def cold_phases(
    instance: dg.DagsterInstance, reader: Reader, since_s: float, keys: set[bytes]
) -> dict[tuple[str, str], float]:
    """Seconds per (stage, phase) of the slowest run each stage started after ``since_s``
    for the burst ``keys``: where a cold start's time goes."""
    first_read: dict[tuple[str, int], float] = {}
    for topic, stage in ((PRODUCTS_ENRICHED, "enrichment"), (ARBITRAGE_ALERTS, "arbitrage")):
        for key in keys:
            seen = reader.seen[topic].get(key)
            if seen is not None and seen.read_at_ms is not None:
                slot = (stage, seen.partition)
                first_read[slot] = min(first_read.get(slot, 1e18), seen.read_at_ms / 1000)
    phases: dict[tuple[str, str], float] = {}
    records = instance.get_run_records(dg.RunsFilter(created_after=_utc(since_s)))
    for record in records:
        run = record.dagster_run
        stage = run.tags.get(STAGE_TAG)
        partition = run.tags.get(PARTITION_TAG, "").rpartition("-")[2]
        if stage is None or not partition.isdigit():
            continue
        read_s = first_read.get((stage, int(partition)))
        launched = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_STARTING)
        tick_id = run.tags.get(TICK_ID_TAG)
        storage = instance.schedule_storage
        ticks = storage.get_ticks_by_ids([int(tick_id)]) if storage and tick_id else []
        if read_s is None or not launched or record.start_time is None or not ticks:
            continue
        marks = (
            since_s,
            ticks[0].timestamp,
            record.create_timestamp.timestamp(),
            launched[0].timestamp,
            record.start_time,
            read_s,
        )
        for phase, start, end in zip(COLD_PHASES, marks, marks[1:], strict=False):
            phases[(stage, phase)] = max(phases.get((stage, phase), 0.0), end - start)
    return phases


def cold_rounds(
    services: Services,
    reader: Reader,
    instance: dg.DagsterInstance,
    bursts: list[list[tuple[bytes, bytes]]],
    idle_s: float,
) -> list[Row]:
    latencies: dict[str, list[float]] = {PRODUCTS_ENRICHED: [], ARBITRAGE_ALERTS: []}
    phases: dict[tuple[str, str], list[float]] = {}
    for index, burst in enumerate(bursts, start=1):
        deadline = time.monotonic() + idle_s * 4 + 60
        while stage_runs_in_flight(instance) and time.monotonic() < deadline:
            time.sleep(1)
        if stage_runs_in_flight(instance):
            raise RuntimeError(f"cold round {index}: stage runs did not end when idle")
        keys = expected_alert_keys(burst)
        burst_start = time.time()
        produced = stream(services, burst, rate=1000.0)
        if not reader.wait_for(ARBITRAGE_ALERTS, keys, COLD_TIMEOUT_S):
            raise RuntimeError(f"cold round {index}: alerts missing after {COLD_TIMEOUT_S:.0f}s")
        for topic, wanted in ((PRODUCTS_ENRICHED, set(produced)), (ARBITRAGE_ALERTS, keys)):
            seen = reader.seen[topic]
            latencies[topic] += [
                (seen[k].visible_ms - produced[k]) / 1000 for k in wanted if k in seen
            ]
        for slot, seconds in cold_phases(instance, reader, burst_start, set(produced)).items():
            phases.setdefault(slot, []).append(seconds)
        log(f"latency: cold round {index} of {len(bursts)} done")
    rows = []
    for topic, what in (
        (PRODUCTS_ENRICHED, "on products.enriched"),
        (ARBITRAGE_ALERTS, "alert on arbitrage.alerts"),
    ):
        if not latencies[topic]:
            continue
        p50, p95, worst = percentiles(latencies[topic])
        judged = topic == ARBITRAGE_ALERTS
        rows.append(
            Row(
                BENCHMARK,
                f"latency p50: produced → {what} (cold: no live run)",
                len(latencies[topic]),
                p50,
                rate=False,
                target="p95 ≤ 15 s" if judged else "",
                met=p95 <= 15.0 if judged else None,
                note=f"p95 {p95:.1f} s, max {worst:.1f} s over {len(bursts)} bursts of "
                f"{COLD_BURST}: sensor tick, run queue, run start, then the warm path",
            )
        )
    for (stage, phase), values in sorted(
        phases.items(), key=lambda i: (i[0][0], COLD_PHASES.index(i[0][1]))
    ):
        p50, _, worst = percentiles(values)
        rows.append(
            Row(
                BENCHMARK,
                f"cold start p50, {stage}: {phase}",
                len(values),
                p50,
                rate=False,
                note=f"max {worst:.1f} s; the slowest of the stage's runs in each of "
                f"{len(values)} bursts (produced: the burst's first message)",
            )
        )
    return rows


def split_by_alerts(
    messages: Sequence[tuple[bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
    """The messages whose product raises an alert, and the others."""
    alerting = expected_alert_keys(messages)
    return (
        [m for m in messages if m[0] in alerting],
        [m for m in messages if m[0] not in alerting],
    )


def interleave(
    alerting: list[tuple[bytes, bytes]], others: list[tuple[bytes, bytes]], count: int
) -> list[tuple[bytes, bytes]]:
    """``count`` messages, every other one raising an alert (while they last)."""
    mixed: list[tuple[bytes, bytes]] = []
    for index in range(count):
        source = alerting if index % 2 == 0 and alerting else others
        mixed.append(source.pop())
    return mixed


def run(
    services: Services,
    rate: float = DEFAULT_RATE,
    seconds: float = DEFAULT_SECONDS,
    cold: int = DEFAULT_COLD_ROUNDS,
    lead_in_s: float = LEAD_IN_S,
    idle_s: float = COLD_IDLE_S,
) -> list[Row]:
    """``lead_in_s`` and ``idle_s`` (how long runs follow an idle partition) are shortened only
    by the smoke test: the table's figures use the defaults."""
    reset_pipeline(services)
    count = int(rate * seconds)
    needed = (int(rate * (seconds + lead_in_s)) // 2 + (cold + 1) * COLD_BURST) * POOL_PER_ALERT
    alerting, others = split_by_alerts(data.raw_messages(needed))
    warm_up = [alerting.pop() for _ in range(COLD_BURST)]
    bursts = [[alerting.pop() for _ in range(COLD_BURST)] for _ in range(cold)]
    lead_in = interleave(alerting, others, int(rate * lead_in_s))
    warm = interleave(alerting, others, count)
    reader = Reader(services)
    reader.start()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="bench-dagster-") as home,
            dagster_processes(Path(home), idle_s) as env,
            instance_of(env) as instance,
        ):
            started = time.perf_counter()
            stream(services, warm_up, rate=1000.0)
            first_alerts = expected_alert_keys(warm_up)
            if not reader.wait_for(ARBITRAGE_ALERTS, first_alerts, WARM_UP_TIMEOUT_S):
                raise RuntimeError(f"warm-up: no alerts within {WARM_UP_TIMEOUT_S:.0f}s")
            first_s = time.perf_counter() - started
            log(f"latency: warm-up (daemon, code location, first runs) {first_s:.0f} s")
            stream(services, lead_in, rate)
            window_start = time.time()
            produced = stream(services, warm, rate)
            alert_keys = expected_alert_keys(warm)
            if not reader.wait_for(ARBITRAGE_ALERTS, alert_keys, DRAIN_TIMEOUT_S):
                raise RuntimeError("warm stream: alerts missing after the stream ended")
            window_end = time.time()
            note = (
                f"{count} updates ({len(alert_keys)} raising alerts) at {rate:g}/s over "
                f"{seconds:.0f} s after a {lead_in_s:.0f} s lead-in, following runs; warm-up "
                f"{first_s:.0f} s"
            )
            rows = hop_rows(produced, reader, alert_keys, note)
            rows += storage_rows(instance, window_start, window_end)
            rows += cold_rounds(services, reader, instance, bursts, idle_s)
    finally:
        reader.close()
    reset_pipeline(services)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.latency", __doc__.splitlines()[0])
    cli.add_argument("--rate", type=float, default=None, help="warm updates per second")
    cli.add_argument("--seconds", type=float, default=None, help="length of the warm stream")
    cli.add_argument("--cold-rounds", type=int, default=None, help="bursts with no live run")
    args = cli.parse_args(argv)
    started = time.perf_counter()
    rate = args.rate or (QUICK_RATE if args.quick else DEFAULT_RATE)
    seconds = args.seconds or (QUICK_SECONDS if args.quick else DEFAULT_SECONDS)
    cold = args.cold_rounds
    if cold is None:
        cold = QUICK_COLD_ROUNDS if args.quick else DEFAULT_COLD_ROUNDS
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    # Runs end after COLD_IDLE_S so the cold rounds need not wait a minute each; without cold
    # rounds (the steady-stream check) they keep the pipeline's default, as in production.
    idle_s = COLD_IDLE_S if cold else Settings.from_env().run_idle_s
    rows = run(services, rate, seconds, cold, idle_s=idle_s)
    command = " ".join(["python -m bench.latency", *(argv or sys.argv[1:])])
    report(BENCHMARK, rows, started, command, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
