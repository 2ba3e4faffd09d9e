"""Screenshot the Dagster asset lineage graph (every group expanded) for the docs.

    .venv/bin/python scripts/screenshot_ui.py --start-webserver --out docs/asset-graph.png
    .venv/bin/python scripts/screenshot_ui.py --url http://127.0.0.1:3000 --out docs/asset-graph.png

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


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--url", help="a running dagster-webserver, e.g. http://127.0.0.1:3000")
    source.add_argument(
        "--start-webserver",
        action="store_true",
        help="start a webserver for pipelines.definitions (temp DAGSTER_HOME, free port)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "asset-graph.png")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per wait")
    return parser.parse_args(argv)


@contextlib.contextmanager
def webserver(args: argparse.Namespace) -> Iterator[str]:
    if args.start_webserver:
        with running_webserver(timeout_s=max(args.timeout, 90.0)) as url:
            yield url
    else:
        yield args.url.rstrip("/")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
