"""`arbitrage` — the project's operator CLI: provision, topics, lag, tail, dlq, alerts, whatif,
fees, web, offsets, digest."""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from arbitrage.accounts import elasticsearch_as, kafka_as
from arbitrage.cli.fees import add_fees_commands
from arbitrage.cli.keepa_commands import cmd_plan, cmd_tokens
from arbitrage.cli.redrive import redrive
from arbitrage.cli.terminal import printable, printable_lines, table
from arbitrage.clients.elasticsearch import ElasticsearchClient, ElasticsearchUnavailableError
from arbitrage.clients.kafka import KafkaClient, KafkaUnavailableError
from arbitrage.clients.retention_losses import acknowledge_losses
from arbitrage.domain import topics
from arbitrage.domain.access import DIGEST, PROVISION
from arbitrage.domain.digest import DEFAULT_TOP_N, MAX_TOP_N, DigestDayError, parse_day
from arbitrage.domain.fee_config import FeeConfigError, load_fee_config
from arbitrage.domain.lifecycle import OPEN
from arbitrage.domain.messages.timestamps import parse_utc, utc_now_iso
from arbitrage.domain.money import format_minor
from arbitrage.domain.notifications_config import NotificationsConfigError
from arbitrage.domain.redaction import scrub_url
from arbitrage.domain.rules_config import RulesConfigError, load_rules_config
from arbitrage.domain.stage_specs import STAGES
from arbitrage.domain.whatif import KIND_ORDER, Change, to_csv
from arbitrage.settings import Settings, SettingsError

LIVE_GROUPS = tuple((spec.live_group, spec.source_topic) for spec in STAGES)
# The group the CLI reads messages with; it never commits.
READER_GROUP = topics.tool_name("cli-tail")


def cmd_provision(kafka: KafkaClient, es: ElasticsearchClient, _: argparse.Namespace) -> int:
    # As the provisioning account when the environment names one (arbitrage/accounts.py).
    kafka, es = kafka_as(kafka, PROVISION), elasticsearch_as(es, PROVISION)
    for name, state in kafka.ensure_topics().items():
        print(f"topic  {name:<24} {state}")
    for name, state in es.ensure_indices().items():
        print(f"index  {name:<24} {state}")
    # An existing topic keeps its replication when the cluster grows: said, not hidden (the
    # exit code stays 0: everything the pipeline needs exists).
    for problem in kafka.replication_problems():
        print(f"warning: {problem}", file=sys.stderr)
    return 0


def cmd_topics(kafka: KafkaClient, _: ElasticsearchClient, args: argparse.Namespace) -> int:
    names = [spec.name for spec in topics.TOPICS]
    described = kafka.describe_topics(names)
    rows = []
    for name in names:
        marks = kafka.watermarks(name)
        rows.append(
            [
                name,
                described[name]["partitions"],
                described[name]["replication_factor"],
                described[name]["min.insync.replicas"],
                described[name]["retention.ms"],
                sum(high - low for low, high in marks.values()),
                " ".join(f"{p}:{high}" for p, (_, high) in sorted(marks.items())),
            ]
        )
    # Offsets, not messages: transaction markers take offsets too (an upper bound on messages).
    headers = ["TOPIC", "PARTITIONS", "REPLICAS", "MIN-ISR", "RETENTION-MS", "OFFSETS-RETAINED"]
    print(table([*headers, "END-OFFSETS"], rows))
    return 0


def lag_rows(kafka: KafkaClient, groups: Sequence[tuple[str, str]]) -> list[list[Any]]:
    rows = []
    for group, topic in groups:
        for lag in kafka.lag(group, topic):
            current = "-" if lag.committed is None else lag.committed
            rows.append([group, topic, lag.partition, current, lag.high_watermark, lag.lag])
    return rows


def cmd_lag(kafka: KafkaClient, _: ElasticsearchClient, args: argparse.Namespace) -> int:
    groups = [g for g in LIVE_GROUPS if args.group in (None, g[0])]
    if args.group and not groups:
        groups = [(args.group, args.topic or topics.RAW_UPDATES)]
    print(
        table(
            ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"],
            lag_rows(kafka, groups),
        )
    )
    return 0


def _decode(value: bytes | None) -> str:
    if value is None:
        return "<no value>"
    try:
        return json.dumps(json.loads(value), ensure_ascii=False)
    except (ValueError, UnicodeDecodeError):
        return f"<{len(value)} bytes, not JSON>"


def cmd_tail(kafka: KafkaClient, _: ElasticsearchClient, args: argparse.Namespace) -> int:
    for message in kafka.newest_messages(args.topic, args.n, READER_GROUP):
        key = message.key().decode("utf-8", "replace") if message.key() else None
        shown = f"{printable(key)}  {printable(_decode(message.value()))}"
        print(f"[{message.partition()}:{message.offset()}] {shown}")
    return 0


def cmd_dlq(kafka: KafkaClient, _: ElasticsearchClient, args: argparse.Namespace) -> int:
    rows = []
    for dlq in (spec.dlq_topic for spec in STAGES):
        for message in kafka.newest_messages(dlq, args.n, READER_GROUP):
            entry = json.loads(message.value())
            preview = base64.b64decode(entry["value"])[:40].decode("utf-8", "replace")
            rows.append(
                [
                    entry["failed_at"],
                    dlq,
                    f"{entry['source_topic']}[{entry['partition']}]@{entry['offset']}",
                    entry.get("key"),
                    entry["error"],
                    repr(preview),
                ]
            )
    rows.sort(key=lambda row: row[0])
    print(
        table(
            ["FAILED-AT", "DLQ", "SOURCE", "KEY", "REASON", "VALUE (first 40 bytes)"],
            rows[-args.n :],
        )
    )
    return 0


def alerts_table(es: ElasticsearchClient, limit: int) -> tuple[str, int]:
    """The best open opportunities by profit as a table, and how many are open in all."""
    es.health()  # an unreachable cluster fails with a sentence (URL redacted), not a traceback
    es.client().indices.refresh(index=topics.ALERTS_INDEX)
    found = es.client().search(
        index=topics.ALERTS_INDEX,
        size=limit,
        # Open opportunities (arbitrage/domain/lifecycle.py); documents from before it have no
        # status.
        query={"term": {"status": OPEN}},
        sort=[{"profit_eur_cents": "desc"}, {"alert_id": "asc"}],
        track_total_hits=True,
    )
    rows = []
    for hit in found["hits"]["hits"]:
        alert = hit["_source"]
        currency = alert["sell_price"]["currency"]
        signals = alert.get("signals") or {}
        sales = signals.get("monthly_sales")
        average = signals.get("sell_avg90")
        current = signals.get("sell_price_current")
        rows.append(
            [
                alert["asin"],
                alert["title"][:30],
                f"{alert['buy_market']} → {alert['sell_market']}",
                format_minor(alert["buy_price"]["amount"], alert["buy_price"]["currency"]),
                format_minor(alert["sell_price"]["amount"], currency),
                "—" if current is None else format_minor(current, currency),
                "—" if average is None else format_minor(average, currency),
                "—" if sales is None else str(sales),
                format_minor(alert["profit_eur_cents"], "EUR"),
                f"{alert['roi'] * 100:.1f} %",
            ]
        )
    # SELL is the price the profit is computed from: the lower of NOW (the current sell price)
    # and AVG 90D (the rules' 90-day average) when the spike guard is on.
    headers = [
        "ASIN",
        "TITLE",
        "ROUTE",
        "BUY",
        "SELL",
        "NOW",
        "AVG 90D",
        "SALES/MO",
        "PROFIT",
        "ROI",
    ]
    return table(headers, rows), int(found["hits"]["total"]["value"])


def cmd_alerts(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    text, total = alerts_table(es, args.n)
    print(text)
    print(f"\n{min(total, args.n)} of {total} alerts shown, best profit first")
    return 0


def _profit(cents: int | None) -> str:
    return "" if cents is None else format_minor(cents, "EUR")


def whatif_table(changes: Sequence[Change]) -> str:
    rows = [
        [
            c.kind,
            c.asin,
            f"{c.buy_market} → {c.sell_market}",
            _profit(c.live_profit_eur_cents),
            _profit(c.whatif_profit_eur_cents),
            ("+" if c.delta_eur_cents > 0 else "") + format_minor(c.delta_eur_cents, "EUR"),
        ]
        for c in changes
    ]
    return table(["CHANGE", "ASIN", "ROUTE", "LIVE PROFIT", "WHAT-IF PROFIT", "DELTA"], rows)


def cmd_whatif(kafka: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    try:
        fees = load_fee_config(args.fees)
        rules = load_rules_config(args.rules or args.settings.rules_file)
        since = parse_utc(args.since)
    except (FeeConfigError, RulesConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ValueError:
        print(f"error: --since {args.since!r} is not an ISO-8601 UTC time", file=sys.stderr)
        return 2
    from arbitrage.cli.whatif import (
        whatif,  # the fee model's numpy/pandas/Arrow: only for this command
    )

    report = whatif(kafka, es, fees, rules, int(since.timestamp() * 1000))
    if args.csv == "-":
        sys.stdout.write(to_csv(report.changes))
        return 0
    counts = {kind: sum(c.kind == kind for c in report.changes) for kind in KIND_ORDER}
    print(
        f"{topics.PRODUCTS_ENRICHED} since {args.since}: {report.records_read} records "
        f"({report.unreadable} unreadable), {report.products} products (latest of each ASIN)\n"
        f"live alerts for them {report.live_alerts}; with {fees.version} fees and "
        f"{rules.version} rules {report.whatif_alerts}; "
        + ", ".join(f"{kind} {n}" for kind, n in counts.items())
    )
    if report.filtered:
        print(
            "routes the rules removed: "
            + ", ".join(f"{k} {v}" for k, v in report.filtered.items() if v)
        )
    if report.changes:
        print(whatif_table(report.changes))
    if args.csv:
        Path(args.csv).write_text(to_csv(report.changes))
        print(f"CSV: {args.csv}")
    return 0


def reset_targets(kafka: KafkaClient, topic: str, to: str) -> dict[int, int]:
    """Per partition, the offset ``to`` names: earliest, latest, or the first at an ISO time."""
    if to == "earliest":
        return {p: low for p, (low, _) in kafka.watermarks(topic).items()}
    if to == "latest":
        return {p: high for p, (_, high) in kafka.watermarks(topic).items()}
    try:
        moment = parse_utc(to)
    except ValueError:
        raise ValueError(
            f"--to {to!r} is not earliest, latest or an ISO-8601 UTC time such as "
            "2026-11-26T10:00:00Z"
        ) from None
    return kafka.offsets_for_time(topic, int(moment.timestamp() * 1000))


def cmd_offsets_reset(kafka: KafkaClient, _: ElasticsearchClient, args: argparse.Namespace) -> int:
    """Move a group's committed offsets; the recovery a run names when offsets do not fit."""
    try:
        targets = reset_targets(kafka, args.topic, args.to)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.partition is not None:
        targets = {p: o for p, o in targets.items() if p in args.partition}
    before = {lag.partition: lag for lag in kafka.lag(args.group, args.topic)}
    rows = [
        [
            args.group,
            args.topic,
            p,
            "-" if before[p].committed is None else before[p].committed,
            offset,
            f"{before[p].low_watermark}-{before[p].high_watermark}",
        ]
        for p, offset in sorted(targets.items())
    ]
    print(table(["GROUP", "TOPIC", "PARTITION", "FROM", "TO", "LOG (LOW-HIGH)"], rows))
    if args.dry_run:
        print("\n--dry-run: nothing committed")
        return 0
    kafka.commit(args.group, args.topic, targets)
    print(f"\ncommitted {len(targets)} partition offset(s) for group {args.group}")
    return 0


def cmd_offsets_acknowledge_loss(
    _: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace
) -> int:
    """Mark a group's recorded retention losses as seen, so its lag check can pass again."""
    seen = acknowledge_losses(es, args.group, args.topic, utc_now_iso())
    if not seen:
        print(f"group {args.group} on {args.topic}: no unacknowledged retention loss")
        return 0
    rows = [
        [
            loss["partition"],
            f"{loss['from_offset']}-{loss['to_offset']}",
            loss["records"],
            loss["detected_at"],
            loss["run_id"],
        ]
        for loss in seen
    ]
    print(table(["PARTITION", "OFFSETS LOST", "RECORDS", "DETECTED", "RUN"], rows))
    print(f"\nacknowledged {len(seen)} loss(es) of group {args.group} on {args.topic}")
    return 0


def cmd_dlq_redrive(kafka: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    try:
        since_ms = int(parse_utc(args.since).timestamp() * 1000) if args.since else None
        report = redrive(
            kafka,
            es,
            args.topic,
            since_ms=since_ms,
            reason_contains=args.reason_contains,
            dry_run=args.dry_run,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    verb = "would redrive" if args.dry_run else "redrove"
    print(
        f"{args.topic}: examined {report.examined}, matched {report.matched}, "
        f"{verb} {report.redriven}, already redriven before {report.already_redriven}"
    )
    for problem in report.problems:
        print(f"  not redriven: {printable(problem)}")
    return 1 if report.problems else 0


def cmd_web(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    """Serve the opportunities page (arbitrage/web/) until Ctrl-C."""
    import uvicorn

    from arbitrage.web.app import create_app
    from arbitrage.web.guard import GuardConfigError, allowed_hosts_from_env

    port = args.port or args.settings.web_port
    try:
        app = create_app(es, poll_s=args.poll_s, allowed_hosts=allowed_hosts_from_env(os.environ))
    except GuardConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"opportunities page at http://{args.host}:{port} (Elasticsearch {es.shown_url})")
    uvicorn.run(app, host=args.host, port=port, log_level="warning")
    return 0


def cmd_digest(_: KafkaClient, es: ElasticsearchClient, args: argparse.Namespace) -> int:
    """A day's digest: printed, its chart written, and (without --dry-run) sent once per
    channel, exactly as the daily_digest job does."""
    from arbitrage.clients.digest import FAILED, read_digest, send_digest
    from arbitrage.clients.notify import load_channels
    from arbitrage.domain.digest import chart_png, table_text
    from arbitrage.domain.notifications_config import load_notifications_config

    channels_file = str(args.settings.notifications_file)
    try:
        # Before reading anything: a bad channels file or a missing secret is said first.
        senders = [] if args.dry_run else load_channels(channels_file, os.environ).senders
        config = load_notifications_config(channels_file)
    except NotificationsConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    own = elasticsearch_as(es, DIGEST)  # as the digest's own account, like the asset
    if own is es:
        es.ensure_indices()
    es = own
    digest = read_digest(es, args.day, args.top)
    png = chart_png(digest)
    out = Path(args.out or f"digest-{args.day.isoformat()}.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(png)
    print(printable_lines(table_text(digest)))
    print(f"\nchart: {out}")
    if args.dry_run:
        takers = [c.name for c in config.channels if c.digest]
        print(f"dry run: not sent (would go to: {', '.join(takers) or 'no channel'})")
        return 0
    deliveries = send_digest(es, senders, digest, png)
    for delivery in deliveries:
        error = f": {delivery.error}" if delivery.error else ""
        print(printable(f"{delivery.channel} ({delivery.channel_type}): {delivery.status}{error}"))
    if not deliveries:
        print(f"no channel takes the digest ({config.path})")
    return 1 if any(d.status == FAILED for d in deliveries) else 0


def _day(text: str) -> Any:
    try:
        return parse_day(text)
    except DigestDayError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _top(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_TOP_N:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number from 1 to {MAX_TOP_N}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="arbitrage", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("provision", help="create topics and indices (idempotent)").set_defaults(
        run=cmd_provision
    )
    commands.add_parser(
        "topics", help="topics, partitions, retention, retained offsets"
    ).set_defaults(run=cmd_topics)
    lag = commands.add_parser(
        "lag", help="per group and partition: current offset, end offset, lag"
    )
    lag.add_argument("--group", help="only this consumer group")
    lag.add_argument("--topic", help="topic of a group that is not one of the pipeline's")
    lag.set_defaults(run=cmd_lag)
    tail = commands.add_parser("tail", help="the newest messages of a topic, decoded")
    tail.add_argument("topic")
    tail.add_argument("-n", type=int, default=10)
    tail.set_defaults(run=cmd_tail)
    dlq = commands.add_parser("dlq", help="the newest dead letters and their reasons")
    dlq.add_argument("-n", type=int, default=10)
    dlq.set_defaults(run=cmd_dlq)
    redrive_parser = dlq.add_subparsers(dest="dlq_command").add_parser(
        "redrive", help="re-produce dead letters' originals to their source topic, once each"
    )
    redrive_parser.add_argument("--topic", required=True, help="the DLQ topic to redrive")
    redrive_parser.add_argument("--since", help="only letters dead-lettered at/after this ISO time")
    redrive_parser.add_argument("--reason-contains", help="only letters whose reason has this text")
    redrive_parser.add_argument("--dry-run", action="store_true", help="count, produce nothing")
    redrive_parser.set_defaults(run=cmd_dlq_redrive)
    plan = commands.add_parser(
        "plan", help="what the next hour's Keepa tokens would buy, by purpose and market"
    )
    plan.add_argument(
        "--reserve", type=int, help="tokens never spent (default: KEEPA_RESERVE_TOKENS, 0)"
    )
    plan.set_defaults(run=cmd_plan)
    tokens = commands.add_parser(
        "tokens", help="Keepa tokens spent, per hour and purpose (the token ledger)"
    )
    tokens.add_argument(
        "--hours", type=int, help="only the newest N hours of the ledger (default: all)"
    )
    tokens.set_defaults(run=cmd_tokens)
    alerts = commands.add_parser("alerts", help="the best alerts by profit")
    alerts.add_argument("-n", type=int, default=20)
    alerts.set_defaults(run=cmd_alerts)
    whatif_parser = commands.add_parser(
        "whatif",
        help="recompute a window's opportunities under other fees/rules and show what would "
        "change (reads only)",
    )
    whatif_parser.add_argument(
        "--fees", required=True, help="a fee model file, e.g. config/fees_v2.toml"
    )
    whatif_parser.add_argument("--rules", help="a rules file (default: ARBITRAGE_RULES_FILE's)")
    whatif_parser.add_argument(
        "--since", required=True, help="ISO-8601 UTC time: products.enriched from its first offset"
    )
    whatif_parser.add_argument(
        "--csv", help="also write the changes as CSV to this file ('-': stdout only)"
    )
    whatif_parser.set_defaults(run=cmd_whatif)
    add_fees_commands(commands)
    web = commands.add_parser("web", help="serve the opportunities page (ARBITRAGE_WEB_PORT)")
    web.add_argument("--host", default="127.0.0.1", help="address to listen on")
    web.add_argument("--port", type=int, help="port (default ARBITRAGE_WEB_PORT, 8080)")
    web.add_argument("--poll-s", type=float, default=5.0, help="how often the list asks for news")
    web.set_defaults(run=cmd_web)
    offsets = commands.add_parser("offsets", help="consumer group offsets").add_subparsers(
        dest="offsets_command", required=True
    )
    reset = offsets.add_parser(
        "reset",
        help="set a group's committed offsets (stop the group's runs first: turn its sensor off)",
    )
    reset.add_argument("--group", required=True, help="e.g. enrichment, arbitrage")
    reset.add_argument("--topic", required=True, help="the group's source topic")
    reset.add_argument(
        "--to", required=True, help="earliest | latest | an ISO-8601 UTC time (first offset at it)"
    )
    reset.add_argument("--partition", type=int, action="append", help="only these (repeatable)")
    reset.add_argument("--dry-run", action="store_true", help="show the change, commit nothing")
    reset.set_defaults(run=cmd_offsets_reset)
    acknowledge = offsets.add_parser(
        "acknowledge-loss",
        help="mark the records retention deleted before a group read them as seen "
        "(the lag check is red until then)",
    )
    acknowledge.add_argument("--group", required=True, help="e.g. enrichment, arbitrage")
    acknowledge.add_argument("--topic", required=True, help="the group's source topic")
    acknowledge.set_defaults(run=cmd_offsets_acknowledge_loss)
    digest = commands.add_parser(
        "digest", help="a day's top open opportunities: print, chart, send (the daily digest)"
    )
    digest.add_argument("--day", type=_day, required=True, help="the UTC day, YYYY-MM-DD")
    digest.add_argument(
        "--dry-run", action="store_true", help="print and write the chart, send nothing"
    )
    digest.add_argument(
        "--top", type=_top, default=DEFAULT_TOP_N, help=f"rows (default {DEFAULT_TOP_N})"
    )
    digest.add_argument("--out", help="the chart's path (default digest-<day>.png here)")
    digest.set_defaults(run=cmd_digest)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        args.settings = settings  # the live fee and rules files, for commands that need them
        return args.run(settings.kafka(), settings.elasticsearch(), args)
    except (KafkaUnavailableError, ElasticsearchUnavailableError, SettingsError) as exc:
        message = str(exc)
        if settings is not None:  # the resources redact already; this catches any other path
            message = scrub_url(message, settings.elasticsearch_url)
        print(f"error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
