"""Screenshot the Dagster asset lineage graph (every group expanded), or the opportunities page
(list and detail), for the docs.

    .venv/bin/python scripts/screenshot_ui.py --start-webserver --out docs/asset-graph.png
    .venv/bin/python scripts/screenshot_ui.py --url http://127.0.0.1:3000 --out docs/asset-graph.png
    .venv/bin/python scripts/screenshot_ui.py --opportunities http://127.0.0.1:8080
    ARBITRAGE_NAMESPACE=shots .venv/bin/python scripts/screenshot_ui.py --opportunities sample

``--opportunities URL`` shoots a running page (`make demo`'s) into docs/opportunities-list.png
and docs/opportunities-detail.png; ``--opportunities sample`` first carries two pulls of the
bundled sample through the stages in this process, in ARBITRAGE_NAMESPACE (required, so no
pipeline's data is touched), and serves the page on a thread.

Needs the system Chromium at /usr/bin/chromium (`apt-get install -y chromium`) and the
`playwright` Python package; playwright's own browser download is not used.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # run as a plain script: make `tests.ui` importable

from tests.ui.dagster_ui import (  # noqa: E402
    UIError,
    asset_names,
    chromium_page,
    names_outside_viewport,
    running_webserver,
    show_asset_graph,
)
from tests.ui.opportunities import open_detail, open_list  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "asset-graph.png"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a running dagster-webserver, e.g. http://127.0.0.1:3000")
    source.add_argument(
        "--opportunities",
        metavar="URL|sample",
        help="shoot the opportunities page at URL, or fill a namespace with the sample, serve it",
    )
    source.add_argument(
        "--start-webserver",
        action="store_true",
        help="start a webserver for pipelines.definitions (temp DAGSTER_HOME, free port)",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help="the graph's PNG (the page's: its folder)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per wait")
    return parser.parse_args(argv)


@contextlib.contextmanager
def webserver(args: argparse.Namespace) -> Iterator[str]:
    if args.start_webserver:
        with running_webserver(timeout_s=max(args.timeout, 90.0)) as url:
            yield url
    else:
        yield args.url.rstrip("/")


@contextlib.contextmanager
def opportunities_page(source: str) -> Iterator[str]:
    if source != "sample":
        yield source.rstrip("/")
        return
    import time

    import dagster as dg

    from arbitrage.domain import topics
    from arbitrage.settings import Settings
    from arbitrage.web.app import create_app
    from arbitrage.web.server import serving
    from tests.definitions import SAMPLE_DEFS

    if not topics.NAMESPACE:
        raise UIError("--opportunities sample writes indices: set ARBITRAGE_NAMESPACE (e.g. shots)")
    settings = Settings.from_env()
    settings.kafka().ensure_topics()
    es = settings.elasticsearch()
    es.ensure_indices()
    instance = dg.DagsterInstance.ephemeral()
    for _pull in range(3):  # three pulls: three points per market
        for job in ("keepa_pull", "enrichment", "arbitrage"):
            result = SAMPLE_DEFS.resolve_job_def(job).execute_in_process(instance=instance)
            if not result.success:
                raise UIError(f"the {job} run failed")
        time.sleep(1.0)
    with serving(create_app(es)) as url:
        yield url


def shoot_opportunities(args: argparse.Namespace) -> int:
    list_png = args.out.parent / "opportunities-list.png"
    detail_png = args.out.parent / "opportunities-detail.png"
    with opportunities_page(args.opportunities) as url, chromium_page() as page:
        if not open_list(page, url, timeout_s=args.timeout):
            raise UIError(f"{url} lists no opportunities")
        list_png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(list_png))
        asin = page.locator("tbody#rows tr[data-alert-id]").first.get_attribute("data-asin")
        open_detail(page, url, str(asin), timeout_s=args.timeout)
        page.screenshot(path=str(detail_png), full_page=True)
    print(f"wrote {list_png} and {detail_png} (detail: {asin})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.opportunities:
        if args.out == DEFAULT_OUT:
            args.out = REPO / "docs" / "opportunities-list.png"
        try:
            return shoot_opportunities(args)
        except UIError as exc:
            print(f"screenshot_ui: {exc}", file=sys.stderr)
            return 1
    try:
        with webserver(args) as url:
            names = asset_names(url)
            with chromium_page() as page:
                show_asset_graph(page, url, names, timeout_s=args.timeout)
                # A docs image with nodes cut off at the edge is worse than none.
                outside = names_outside_viewport(page, names)
                if outside:
                    raise UIError(f"assets outside the visible graph: {', '.join(outside)}")
                args.out.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(args.out))
    except UIError as exc:
        print(f"screenshot_ui: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({len(names)} asset names: {', '.join(names)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
