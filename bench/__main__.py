"""All benchmarks, one table: ``python -m bench`` (``make bench``).

Runs, in order: the fee model (pure CPU, no services), the enrichment stage against the seed's
loop and the raw floor, memory against the backlog, the Keepa pull, the token planner's
opportunity capture on the Keepa simulator, and the latency through Dagster's sensors. Prints
one markdown table and writes it, with every figure, to bench/results/latest.{md,json}.
``--quick`` runs everything at tiny sizes (a smoke run; no targets judged). Each part also
runs alone: ``python -m bench.<name> --help``.

Uses the Kafka and Elasticsearch named by KAFKA_BOOTSTRAP_SERVERS / ELASTICSEARCH_URL and
empties the pipeline's topics and indices there: never point it at services whose data matters.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence

from bench import capture, data, enrichment, fee_model, keepa_pull, latency, memory
from bench.common import Row, Services, connect, log, parser, report

PARTS = ("fee_model", "enrichment", "memory", "keepa_pull", "capture", "latency")


def _plan(quick: bool) -> dict[str, Callable[[Services], list[Row]]]:
    judge = not quick
    if quick:
        return {
            "fee_model": lambda s: fee_model.run(
                fee_model.QUICK_N, fee_model.QUICK_BASELINE_N, judge
            ),
            "enrichment": lambda s: enrichment.run(
                s, enrichment.QUICK_N, enrichment.QUICK_BASELINE_N, judge=judge, repeats=1
            ),
            "memory": lambda s: memory.run(s, memory.QUICK_N, memory.QUICK_BACKLOG, judge=judge),
            "keepa_pull": lambda s: keepa_pull.run(s, keepa_pull.QUICK_N),
            "capture": lambda s: capture.run(capture.Scenario(**capture.QUICK), judge=judge),
            "latency": lambda s: latency.run(
                s, latency.QUICK_RATE, latency.QUICK_SECONDS, latency.QUICK_COLD_ROUNDS
            ),
        }
    return {
        "fee_model": lambda s: fee_model.run(judge=judge),
        "enrichment": lambda s: enrichment.run(s, judge=judge),
        "memory": lambda s: memory.run(s, judge=judge),
        "keepa_pull": lambda s: keepa_pull.run(s),
        "capture": lambda s: capture.run(capture.Scenario(**capture.SHORT), judge=judge),
        "latency": lambda s: latency.run(s),
    }


def main(argv: Sequence[str] | None = None) -> int:
    cli = parser("python -m bench", __doc__.splitlines()[0])
    cli.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all)",
    )
    args = cli.parse_args(argv)
    chosen = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown:
        cli.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    started = time.perf_counter()
    services = connect()
    log(f"using {services.describe()} (pipeline topics and indices are reset)")
    # Inputs first (generated once, then read from bench/.cache): the sizes the parts need.
    biggest = 2_500 if args.quick else max(fee_model.DEFAULT_N, memory.DEFAULT_BACKLOG)
    data.ensure_inputs(biggest, log)
    rows: list[Row] = []
    plan = _plan(args.quick)
    for part in PARTS:
        if part in chosen:
            part_started = time.perf_counter()
            rows += plan[part](services)
            log(f"{part} done in {time.perf_counter() - part_started:.0f} s")
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])])
    report("latest", rows, started, command, write=not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
