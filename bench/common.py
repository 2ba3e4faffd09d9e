"""What every benchmark shares: result rows, the table, peak-RSS probes, services and resets.

Benchmarks run against the Kafka and Elasticsearch named by KAFKA_BOOTSTRAP_SERVERS and
ELASTICSEARCH_URL (the same variables the pipeline's resources read). Each Kafka/ES measurement
starts from empty pipeline topics and indices, so the benchmarks must never point at services
whose data matters.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from arbitrage.cli import reset
from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"


# --------------------------------------------------------------------------- result rows


@dataclass
class Row:
    """One line of the table: a measurement, and how it compares with its baseline."""

    benchmark: str
    measured: str
    n: int | None
    seconds: float | None
    peak_rss_mib: float | None = None
    # ours ÷ baseline, in the unit ``ratio_of`` names (records/s unless said otherwise).
    ratio: float | None = None
    ratio_of: str = "records/s"
    target: str = ""
    met: bool | None = None
    note: str = ""
    records_per_s: float | None = None
    # False where N / seconds means nothing (a latency, a count of rounds).
    rate: bool = True

    def __post_init__(self) -> None:
        if self.rate and self.records_per_s is None and self.n and self.seconds:
            self.records_per_s = self.n / self.seconds


def _fmt_number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _fmt_ratio(row: Row) -> str:
    if row.ratio is None:
        return "—"
    unit = "" if row.ratio_of == "records/s" else f" ({row.ratio_of})"
    return f"{row.ratio:.2f}×{unit}"


def _fmt_met(row: Row) -> str:
    if row.met is None:
        return ""
    return "met" if row.met else "**missed**"


COLUMNS = (
    "benchmark",
    "what was measured",
    "N",
    "seconds",
    "records/s",
    "peak RSS MiB",
    "vs baseline",
    "target",
    "",
    "notes",
)


def markdown_table(rows: Sequence[Row]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        cells = [
            row.benchmark,
            row.measured,
            _fmt_number(row.n),
            _fmt_seconds(row.seconds),
            _fmt_number(row.records_per_s),
            _fmt_number(row.peak_rss_mib),
            _fmt_ratio(row),
            row.target,
            _fmt_met(row),
            row.note,
        ]
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines)


def machine_line() -> str:
    """CPU count and load average, so a reader can judge how busy the machine was."""
    load = os.getloadavg()
    return (
        f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1/5/15 min)"
    )


def write_results(
    name: str, rows: Sequence[Row], header: dict[str, Any], results_dir: Path = RESULTS_DIR
) -> tuple[Path, Path]:
    """``<name>.json`` (every field) and ``<name>.md`` (the table) under bench/results/."""
    results_dir.mkdir(parents=True, exist_ok=True)
    json_path = results_dir / f"{name}.json"
    md_path = results_dir / f"{name}.md"
    document = {**header, "rows": [asdict(row) for row in rows]}
    json_path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    lines = [f"Benchmarks run {header['finished_at']} on {header['machine']}."]
    if header.get("command"):
        lines.append(f"Command: `{header['command']}` ({header['wall_seconds']:.0f} s).")
    md_path.write_text("\n".join(lines) + "\n\n" + markdown_table(rows) + "\n")
    return json_path, md_path


def report(name: str, rows: Sequence[Row], started: float, command: str, write: bool) -> None:
    """Print the table (and the machine line), and write it unless told not to."""
    header = {
        "finished_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_line(),
        "command": command,
        "wall_seconds": time.perf_counter() - started,
    }
    print()
    print(markdown_table(rows))
    print()
    print(f"{header['machine']}; {header['wall_seconds']:.0f} s in all")
    if write:
        json_path, md_path = write_results(name, rows, header)
        print(f"wrote {json_path.relative_to(BENCH_DIR.parent)} and {md_path.name}")


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the table."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True, file=_stderr())


def _stderr() -> Any:
    import sys

    return sys.stderr


# --------------------------------------------------------------------------- peak RSS


def _status_kib(field_name: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRss:
    """Peak resident memory of this process during a ``with`` block, in MiB.

    Linux keeps the high-water mark in /proc/self/status (VmHWM) and lets a process reset it by
    writing 5 to /proc/self/clear_refs, so the figure covers only the block. Where that is not
    available, a thread samples VmRSS (or, last resort, the lifetime ru_maxrss is reported).
    """

    def __init__(self, interval_s: float = 0.05) -> None:
        self.interval_s = interval_s
        self.mib: float | None = None
        self._sampled = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._hwm_reset = False

    def __enter__(self) -> PeakRss:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as refs:
                refs.write("5")
            self._hwm_reset = _status_kib("VmHWM") is not None
        except OSError:
            self._hwm_reset = False
        if not self._hwm_reset:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled = max(self._sampled, _status_kib("VmRSS") or 0)
            self._stop.wait(self.interval_s)

    def __exit__(self, *exc: object) -> None:
        if self._hwm_reset:
            self.mib = (_status_kib("VmHWM") or 0) / 1024
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._sampled:
            self.mib = self._sampled / 1024
        else:
            self.mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- services


@dataclass
class Services:
    kafka: KafkaClient
    es: ElasticsearchClient

    def describe(self) -> str:
        return f"Kafka {self.kafka.bootstrap_servers}, Elasticsearch {self.es.shown_url}"


def connect() -> Services:
    """The resources the pipeline would use; fails with the resources' own hint if down."""
    kafka = Settings.from_env().kafka(timeout_s=10.0)
    es = Settings.from_env().elasticsearch(request_timeout_s=120.0)
    kafka.check_reachable()
    es.health()
    return Services(kafka, es)


def reset_pipeline(services: Services, extra_indices: Sequence[str] = ()) -> None:
    """Empty every pipeline topic and index, so each measurement starts from the same state."""
    anywhere = Settings.from_env().allow_reset_anywhere
    reset.reset_pipeline(services.kafka, services.es, extra_indices, allow_anywhere=anywhere)


def produce_messages(
    kafka: KafkaClient, topic: str, messages: Iterator[tuple[bytes, bytes]] | Sequence[Any]
) -> int:
    """Produce (key, value) pairs with the pipeline's producer settings; returns the count."""
    count = 0
    with kafka.producer() as producer:
        for key, value in messages:
            producer.produce(topic, key, value)
            count += 1
    return count


def unique_group(prefix: str) -> str:
    """A fresh consumer group, so a measurement never resumes from another one's offsets."""
    return topics.tool_name(f"bench.{prefix}.{os.getpid()}.{time.time_ns()}")


# --------------------------------------------------------------------------- CLI


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(prog=prog, description=description)
    cli.add_argument(
        "--quick", action="store_true", help="tiny sizes: a smoke run of seconds, no targets"
    )
    cli.add_argument(
        "--no-write", action="store_true", help="print the table only; write nothing to results/"
    )
    return cli


def pct_within(a: float, b: float) -> float:
    """How far apart two positive figures are, as a fraction of the smaller."""
    low, high = sorted((a, b))
    return (high - low) / low if low > 0 else float("inf")
