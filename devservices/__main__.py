"""CLI: python -m devservices up|down|status|logs|classpath|instance|pins."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

from devservices import fetch, report, secure, service
from devservices.dagster_instance import workspace_env, write_instance
from devservices.elasticsearch import Elasticsearch, elasticsearch_nodes
from devservices.elasticsearch import node_name as es_node_name
from devservices.errors import DevServicesError
from devservices.kafka import Kafka, kafka_classpath, kafka_nodes, node_name
from devservices.keepa_simulator import KeepaSimulator
from devservices.postgres import Postgres
from devservices.process import PidState, tail
from devservices.settings import REPO_ROOT, Settings

# Each name stands for the processes it runs: Kafka is KAFKA_BROKERS nodes, Elasticsearch
# ES_NODES nodes.
SERVICES: dict[str, Callable[[Settings], list[service.Service]]] = {
    "kafka": lambda settings: list(kafka_nodes(settings)),
    "elasticsearch": lambda settings: list(elasticsearch_nodes(settings)),
    "postgres": lambda settings: [Postgres(settings)],
    "keepa-sim": lambda settings: [KeepaSimulator(settings)],
}
# Started with the others only when asked for (KEEPA_SIM=1), or by name.
OPTIONAL = {"keepa-sim": lambda settings: settings.keepa_sim}
ALIASES = {
    "es": "elasticsearch",
    "pg": "postgres",
    "postgresql": "postgres",
    "keepa": "keepa-sim",
}
# One node of a Kafka cluster by name (kafka-1 is node id 1, on KAFKA_PORT).
KAFKA_NODE = re.compile(r"kafka-([1-9][0-9]*)")
# One node of an Elasticsearch cluster (elasticsearch-1 on ES_PORT; es-2 for short).
ES_NODE = re.compile(r"(?:elasticsearch|es)-([1-9][0-9]*)")


def _service_name(value: str) -> str:
    name = ALIASES.get(value, value)
    es_node = ES_NODE.fullmatch(name)
    if es_node:
        return f"elasticsearch-{es_node.group(1)}"
    if name not in SERVICES and not KAFKA_NODE.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"unknown service {value!r} (choose from {', '.join(SERVICES)}, or kafka-N / "
            "elasticsearch-N for one node of a cluster)"
        )
    return name


def _selected(settings: Settings, names: Sequence[str]) -> list[service.Service]:
    chosen = list(dict.fromkeys(names)) or [
        name for name in SERVICES if name not in OPTIONAL or OPTIONAL[name](settings)
    ]
    selected: list[service.Service] = []
    for name in chosen:
        node = KAFKA_NODE.fullmatch(name)
        es_node = ES_NODE.fullmatch(name)
        if node:
            selected.append(Kafka(settings, int(node.group(1)) - 1))
        elif es_node:
            selected.append(Elasticsearch(settings, int(es_node.group(1)) - 1))
        else:
            selected += SERVICES[name](settings)
    return selected


def _stray_nodes(
    settings: Settings,
    base: str,
    wanted: set[str],
    node: Callable[[Settings, int, int], service.Service],
) -> list[service.Service]:
    """Nodes of one kind running from DEVSERVICES_HOME that the layout does not name: ``base``
    (one node) or ``base-N`` (a cluster), left running when the node count changed (their
    ports are the ones the new layout needs). ``node(settings, count, number)`` describes node
    ``number`` within a layout of ``count`` nodes, so its own directory and pid file are read."""
    stray: list[service.Service] = []
    if not settings.state_dir.is_dir():
        return stray
    numbered = re.compile(rf"{re.escape(base)}-([1-9][0-9]*)")
    for home in sorted(settings.state_dir.iterdir()):
        match = numbered.fullmatch(home.name)
        if home.name in wanted or not (home.name == base or match):
            continue
        number = int(match.group(1)) if match else 1
        found = node(settings, max(number, 2) if match else 1, number)
        if found.check_pid(cleanup=False)[0] is PidState.RUNNING:
            stray.append(found)
    return stray


def stray_kafka_nodes(settings: Settings) -> list[service.Service]:
    """Kafka nodes running that KAFKA_BROKERS does not name (``_stray_nodes``)."""
    wanted = {node_name(settings, node) for node in range(settings.kafka_brokers)}
    return _stray_nodes(
        settings,
        "kafka",
        wanted,
        lambda s, count, number: Kafka(replace(s, kafka_brokers=count), number - 1),
    )


def stray_elasticsearch_nodes(settings: Settings) -> list[service.Service]:
    """Elasticsearch nodes running that ES_NODES does not name (``_stray_nodes``)."""
    wanted = {es_node_name(settings, node) for node in range(settings.es_nodes)}
    return _stray_nodes(
        settings,
        "elasticsearch",
        wanted,
        lambda s, count, number: Elasticsearch(replace(s, es_nodes=count), number - 1),
    )


def _strays(settings: Settings, selected: Sequence[service.Service]) -> list[service.Service]:
    """The running nodes of another KAFKA_BROKERS / ES_NODES layout than the selected ones'."""
    stray: list[service.Service] = []
    if any(isinstance(svc, Kafka) for svc in selected):
        stray += stray_kafka_nodes(settings)
    if any(isinstance(svc, Elasticsearch) for svc in selected):
        stray += stray_elasticsearch_nodes(settings)
    return stray


def _check_layout(settings: Settings, selected: Sequence[service.Service]) -> None:
    if any(isinstance(svc, Kafka) for svc in selected):
        stray = stray_kafka_nodes(settings)
        if stray:
            raise DevServicesError(
                f"Kafka is running as {', '.join(node.name for node in stray)}, which "
                f"KAFKA_BROKERS={settings.kafka_brokers} does not include; stop it first "
                "(`python -m devservices down kafka` stops every Kafka node)."
            )
    if any(isinstance(svc, Elasticsearch) for svc in selected):
        es_stray = stray_elasticsearch_nodes(settings)
        if es_stray:
            raise DevServicesError(
                f"Elasticsearch is running as {', '.join(node.name for node in es_stray)}, "
                f"which ES_NODES={settings.es_nodes} does not include; stop it first "
                "(`python -m devservices down elasticsearch` stops every node)."
            )


def cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    started = time.monotonic()
    selected = _selected(settings, args.services)
    _check_layout(settings, selected)
    service.up(selected, settings.timeout)
    report.log.info("all up in %.1fs", time.monotonic() - started)
    if settings.secure:
        path = secure.write_client_env(settings)
        report.log.info("secure mode: client settings in %s (`. %s` to use them)", path, path)
    return 0


def cmd_down(settings: Settings, args: argparse.Namespace) -> int:
    selected = _selected(settings, args.services)
    if not args.services or "kafka" in args.services:
        # Every Kafka node, also those of another KAFKA_BROKERS: `down` leaves none behind.
        selected += stray_kafka_nodes(settings)
    if not args.services or "elasticsearch" in args.services:
        selected += stray_elasticsearch_nodes(settings)
    if not args.services:
        # An optional service started earlier (KEEPA_SIM=1 then) is stopped with the rest.
        names = {svc.name for svc in selected}
        for name in OPTIONAL:
            extra = SERVICES[name](settings)
            selected += [s for s in extra if s.name not in names and s.pid_file.path.exists()]
    nodes = [svc for svc in selected if isinstance(svc, Kafka)]
    es_nodes = [svc for svc in selected if isinstance(svc, Elasticsearch)]
    # Reverse order: whatever was started last is stopped first (Kafka, started first, last).
    for svc in reversed([svc for svc in selected if not isinstance(svc, (Kafka, Elasticsearch))]):
        service.down(svc)
    # A cluster's nodes together: a node stopped after the others waits out its controlled
    # shutdown (30 s, then SIGKILL) for a controller quorum that has already gone; and an
    # Elasticsearch node stopped alone makes the others move its shards' copies around.
    for group in (es_nodes, nodes):
        with ThreadPoolExecutor(max_workers=max(1, len(group))) as pool:
            list(pool.map(service.down, group))
    return 0


def cmd_status(settings: Settings, args: argparse.Namespace) -> int:
    all_healthy = True
    selected = _selected(settings, args.services)
    stray = _strays(settings, selected)
    for svc in selected:
        health, pid = service.health(svc)
        all_healthy &= health == "healthy"
        print(f"{svc.name:<16} {svc.address:<24} pid {pid or '-':<8} {health}")
        hint = svc.status_hint()
        if hint and health == "healthy":
            print(f"{'':<16} {hint}")
    for node in stray:
        all_healthy = False
        _, pid = node.check_pid(cleanup=False)
        layout = (
            f"KAFKA_BROKERS={settings.kafka_brokers} (`down kafka` stops it)"
            if isinstance(node, Kafka)
            else f"ES_NODES={settings.es_nodes} (`down elasticsearch` stops it)"
        )
        print(
            f"{node.name:<16} {node.address:<24} pid {pid or '-':<8} running, not part of {layout}"
        )
    return 0 if all_healthy else 1


def cmd_logs(settings: Settings, args: argparse.Namespace) -> int:
    chosen = _selected(settings, [args.service])
    if len(chosen) > 1:
        if args.follow:
            names = ", ".join(svc.name for svc in chosen)
            raise DevServicesError(f"-f follows one log: name one node ({names}).")
        for svc in chosen:
            print(f"==> {svc.name} <==")
            _print_tail(svc, args.lines)
        return 0
    svc = chosen[0]
    path = _print_tail(svc, args.lines)
    if args.follow:
        sys.stdout.flush()
        with path.open("r", errors="replace") as fh:
            fh.seek(0, 2)
            try:
                while True:
                    line = fh.readline()
                    if line:
                        sys.stdout.write(line)
                        sys.stdout.flush()
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    return 0


def _print_tail(svc: service.Service, lines: int) -> Path:
    path = svc.main_log if svc.main_log.exists() else svc.console_log
    if not path.exists():
        raise DevServicesError(
            f"no logs for {svc.name} yet (looked for {svc.main_log}); start it with "
            f"`python -m devservices up {svc.name}`."
        )
    for line in tail(path, lines):
        print(line)
    return path


def cmd_classpath(settings: Settings, args: argparse.Namespace) -> int:
    print(kafka_classpath(settings.cache_dir))
    return 0


def cmd_pins(settings: Settings, args: argparse.Namespace) -> int:
    """Check the cached downloads against devservices/pins.sha256, or (--update, maintainers
    after a version bump) rewrite it from fresh downloads."""
    if args.update:
        pins = fetch.update_pins(args.maven_repo)
        print(f"wrote {len(pins)} pins to {fetch.PINS_FILE}; review the diff before committing")
        return 0
    kafka = fetch.kafka_libs(settings.cache_dir)
    es = fetch.elasticsearch_dist(settings.cache_dir)
    print(f"every file matches its pin: {kafka}, {es}")
    return 0


def cmd_instance(settings: Settings, args: argparse.Namespace) -> int:
    """Write $DAGSTER_HOME/dagster.yaml; print the exports its storage block and workspace.yaml
    need, for `eval "$(python -m devservices instance)"` before running Dagster's CLI by hand."""
    home = Path(os.environ.get("DAGSTER_HOME") or REPO_ROOT / ".dagster_home")
    added = write_instance(home.absolute(), os.environ)
    report.log.info("wrote %s (storage: %s)", home / "dagster.yaml", added["DAGSTER_STORAGE"])
    exports = {"DAGSTER_HOME": str(home.absolute()), **added, **workspace_env(os.environ)}
    for name, value in exports.items():
        print(f"export {name}={shlex.quote(value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m devservices",
        description="Run a local Kafka broker, Elasticsearch node and PostgreSQL without Docker.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="more progress output")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_text in (
        ("up", cmd_up, "fetch if needed, start, and wait until ready (default: all)"),
        ("down", cmd_down, "stop (SIGTERM, then SIGKILL after 30s)"),
        ("status", cmd_status, "one line per service; exit 0 only if all are healthy"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument(
            "services",
            nargs="*",
            type=_service_name,
            metavar="SERVICE",
            help="kafka (every node), kafka-N (one node of a cluster), elasticsearch (es; every "
            "node), elasticsearch-N (es-N), postgres (pg)",
        )
        p.set_defaults(func=func)
    p = sub.add_parser("logs", help="print the tail of a service's log")
    p.add_argument("service", type=_service_name, metavar="SERVICE")
    p.add_argument("-n", "--lines", type=int, default=50, help="number of lines (default 50)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    p.set_defaults(func=cmd_logs)
    p = sub.add_parser(
        "instance",
        help="write $DAGSTER_HOME/dagster.yaml and print the exports it needs (for eval)",
    )
    p.set_defaults(func=cmd_instance)
    p = sub.add_parser("classpath", help="print the Kafka jar classpath (fetching if needed)")
    p.set_defaults(func=cmd_classpath)
    p = sub.add_parser(
        "pins", help="check the cached downloads against their pinned SHA-256 (fetching if needed)"
    )
    p.add_argument(
        "--update",
        action="store_true",
        help="maintainers: fetch everything afresh and rewrite devservices/pins.sha256",
    )
    p.add_argument(
        "--maven-repo",
        type=Path,
        help="with --update: this Maven repository instead of a fresh, empty one",
    )
    p.set_defaults(func=cmd_pins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report.configure(verbose=args.verbose)
    try:
        settings = Settings.from_env()
        return int(args.func(settings, args))
    except DevServicesError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        if exc.details:
            print(exc.details, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
