"""Peak memory of one enrichment run: bounded by the batch size, not by the backlog.

Two runs of the enrichment stage, each in its own subprocess (so the figure is the stage's own
peak resident set, imports included, and nothing of this harness), over the same 100 000
messages:

- backlog 100 000 — those messages are all that is pending;
- backlog 1 000 000 — 900 000 more are produced behind them, and the run gets the planned
  ranges (``plan_ranges`` from the group's position to the high watermark) cut at the
  per-partition counts of the first run, so it processes exactly the same records while the
  broker holds ten times as many for it.

Between the runs the Elasticsearch indices are recreated, so both index into an empty
``products``. Each child reports its VmHWM (peak RSS) from /proc when it finishes. Target: the
two peaks within 20 % of each other.

Run alone: ``python -m bench.memory [--n 100000] [--backlog 1000000] [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from arbitrage.cli.reset import delete_groups
from arbitrage.domain import topics
from arbitrage.domain.stage_specs import ENRICHMENT
from arbitrage.domain.topics import RAW_UPDATES
from bench import data
from bench.common import (
    Row,
    Services,
    connect,
    log,
    parser,
    pct_within,
    produce_messages,
    report,
    reset_pipeline,
    unique_group,
)

BENCHMARK = "memory"
DEFAULT_N = 100_000
DEFAULT_BACKLOG = 1_000_000
QUICK_N = 1_000
QUICK_BACKLOG = 5_000
BATCH_SIZE = 5_000
TARGET_WITHIN = 0.20
REPO = Path(__file__).resolve().parent.parent


def _peak_rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(group: str, limits: dict[int, int], batch_size: int) -> int:
    """In the subprocess: one enrichment run; prints its stats and peak RSS as JSON."""
    import logging

    from arbitrage.domain.fee_config import load_fee_config
    from arbitrage.engine.ranges import PartitionRange, plan_ranges
    from arbitrage.engine.runner import StageRunner
    from arbitrage.engine.stage_setup import StageSetup
    from arbitrage.settings import Settings

    kafka = Settings.from_env().kafka()
    es = Settings.from_env().elasticsearch(request_timeout_s=120.0)
    fees = load_fee_config(Settings.from_env().fees_file)
    runner = StageRunner(
        StageSetup(ENRICHMENT, es, fees, batch_size=batch_size),
        kafka,
        logger=logging.getLogger("bench.memory"),
        idle_timeout_s=60.0,
    )
    ready_mib = _peak_rss_mib()
    planned = plan_ranges(kafka.lag(group, RAW_UPDATES))
    ranges = [
        PartitionRange(r.partition, r.start, min(r.end, r.start + limits.get(r.partition, 0)))
        for r in planned
    ]
    stats = runner.run(group, ranges)
    print(
        json.dumps(
            {
                "records": stats.records_in,
                "indexed": stats.indexed,
                "seconds": stats.seconds,
                "backlog": sum(r.size for r in planned),
                "ready_mib": ready_mib,
                "peak_mib": _peak_rss_mib(),
            }
        )
    )
    return 0


def _run_child(group: str, limits: dict[int, int], batch_size: int) -> dict[str, float]:
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.memory",
            "--child",
            group,
            json.dumps({str(p): n for p, n in limits.items()}),
            "--batch-size",
            str(batch_size),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the stage subprocess failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(
    services: Services,
    n: int = DEFAULT_N,
    backlog: int = DEFAULT_BACKLOG,
    batch_size: int = BATCH_SIZE,
    judge: bool = True,
) -> list[Row]:
    kafka, es = services.kafka, services.es
    data.ensure_inputs(max(n, backlog), log)
    reset_pipeline(services)
    started = time.perf_counter()
    produced = sum(produce_messages(kafka, RAW_UPDATES, c) for c in data.iter_raw_chunks(n))
    log(f"memory: produced {produced:,} raw updates in {time.perf_counter() - started:.1f} s")
    # Every message pending now is what both runs process, partition by partition.
    limits = {p: high - low for p, (low, high) in kafka.watermarks(RAW_UPDATES).items()}

    results = []
    for label in ("small", "large"):
        if label == "large":
            for index in (topics.PRODUCTS_INDEX, topics.ALERTS_INDEX):
                es.client().options(ignore_status=404).indices.delete(index=index)
            es.ensure_indices()
            started = time.perf_counter()
            more = 0
            skip = produced
            for chunk in data.iter_raw_chunks(backlog):
                # The first n are already on the topic; append the rest behind them.
                take = chunk[skip:] if skip < len(chunk) else []
                skip = max(0, skip - len(chunk))
                more += produce_messages(kafka, RAW_UPDATES, take)
            log(f"memory: produced {more:,} more in {time.perf_counter() - started:.1f} s")
        group = unique_group(f"memory-{label}")
        log(f"memory: enrichment run in a subprocess, {label} backlog")
        try:
            results.append(_run_child(group, limits, batch_size))
        finally:
            delete_groups(kafka, [group])
    small, large = results
    if small["records"] != large["records"] or small["records"] != produced:
        raise RuntimeError(f"the two runs processed {small['records']} and {large['records']}")
    apart = pct_within(small["peak_mib"], large["peak_mib"])
    rows = [
        Row(
            BENCHMARK,
            f"enrichment run, {int(small['backlog']):,} messages pending (batch {batch_size:,})",
            int(small["records"]),
            small["seconds"],
            small["peak_mib"],
            ratio=1.0,
            ratio_of="peak RSS",
            note=f"subprocess peak RSS (VmHWM); {small['ready_mib']:.0f} MiB after imports",
        ),
        Row(
            BENCHMARK,
            f"enrichment run, {int(large['backlog']):,} messages pending (batch {batch_size:,})",
            int(large["records"]),
            large["seconds"],
            large["peak_mib"],
            ratio=large["peak_mib"] / small["peak_mib"],
            ratio_of="peak RSS",
            target=f"peaks within {TARGET_WITHIN:.0%}",
            met=apart <= TARGET_WITHIN if judge else None,
            note=f"same records, planned ranges cut per partition; peaks {apart:.1%} apart",
        ),
    ]
    reset_pipeline(services)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench.memory", __doc__.splitlines()[0])
    cli.add_argument(
        "--n",
        type=int,
        default=None,
        help=f"messages each run processes (default {DEFAULT_N:,}; --quick {QUICK_N:,})",
    )
    cli.add_argument(
        "--backlog",
        type=int,
        default=None,
        help=f"messages pending in the "
        f"second run (default {DEFAULT_BACKLOG:,}; --quick {QUICK_BACKLOG:,})",
    )
    cli.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    cli.add_argument("--child", nargs=2, metavar=("GROUP", "LIMITS"), help=argparse.SUPPRESS)
    args = cli.parse_args(argv)
    if args.child:
        group, limits = args.child
        return child(group, {int(p): n for p, n in json.loads(limits).items()}, args.batch_size)
    started = time.perf_counter()
    n = args.n or (QUICK_N if args.quick else DEFAULT_N)
    backlog = args.backlog or (QUICK_BACKLOG if args.quick else DEFAULT_BACKLOG)
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    rows = run(services, n, backlog, args.batch_size, judge=not args.quick)
    command = " ".join(["python -m bench.memory", *(argv or sys.argv[1:])])
    report(BENCHMARK, rows, started, command, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
