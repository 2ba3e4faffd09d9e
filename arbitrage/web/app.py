"""The opportunities page as a Starlette app: server-rendered Jinja2 templates, local static
files, a small JSON endpoint the list polls for new alerts. Elasticsearch is the only store.
Read-only (GET routes only), behind the same Host allowlist as the Dagster UI
(arbitrage/web/guard.py)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import elastic_transport
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from arbitrage.clients.elasticsearch import ElasticsearchClient, ElasticsearchUnavailableError
from arbitrage.clients.keepa_ledger import hour_gauge
from arbitrage.domain.markets import MARKETPLACES
from arbitrage.domain.money import format_minor
from arbitrage.web.chart import build_chart
from arbitrage.web.guard import GuardPolicy, HostOriginGuard
from arbitrage.web.queries import (
    SORTS,
    FilterError,
    alerts_state,
    categories,
    list_opportunities,
    parse_filters,
    product_detail,
)

HERE = Path(__file__).resolve().parent
ASIN_CHARS = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# Fee lines of an alert in the order they reduce the sell market's net price to the profit.
FEE_LINES = (
    ("referral_fee", "Referral fee"),
    ("closing_fee", "Closing fee"),
    ("fba_fee", "FBA fee"),
    ("efn_fee", "EFN fee"),
    ("dst_fee", "Digital services tax"),
    ("fee_vat", "VAT on Amazon's fees"),
    ("inbound_shipping", "Inbound shipping"),
    ("buy_net", "Purchase (net of VAT)"),
)


def _money(cents: int | None, currency: str = "EUR") -> str:
    return "—" if cents is None else format_minor(cents, currency)


def _hour(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC).strftime("%Y-%m-%d %H:00")


def _templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["money"] = _money
    templates.env.filters["hour"] = _hour
    templates.env.globals.update(
        MARKETPLACES=MARKETPLACES, SORTS=SORTS, FEE_LINES=FEE_LINES, abs=abs
    )
    return templates


def create_app(
    es: ElasticsearchClient, poll_s: float = 5.0, allowed_hosts: Iterable[str] = ()
) -> Starlette:
    """The page reading ``es``; the list asks for news every ``poll_s`` seconds. It answers to
    127.0.0.1, localhost and ``allowed_hosts`` only (a DNS-rebinding page would otherwise read
    the alerts); GuardConfigError for a name that is not one."""
    templates = _templates()
    policy = GuardPolicy.with_names(allowed_hosts)

    def unavailable(request: Request, exc: Exception) -> Response:
        # The resource's messages redact the URL's credentials; nothing else is shown.
        message = (
            str(exc)
            if isinstance(exc, ElasticsearchUnavailableError)
            else f"Elasticsearch at {es.shown_url} did not answer ({type(exc).__name__})"
        )
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": message}, status_code=503)
        return templates.TemplateResponse(
            request, "error.html", {"message": message}, status_code=503
        )

    def list_page(request: Request) -> Response:
        try:
            filters = parse_filters(request.query_params)
        except FilterError as exc:
            return templates.TemplateResponse(
                request, "error.html", {"message": str(exc)}, status_code=400
            )
        found = list_opportunities(es, filters)
        context: dict[str, Any] = {
            "filters": filters,
            "found": found,
            "categories": categories(es),
            "state": alerts_state(es),
            "poll_ms": int(poll_s * 1000),
            "tokens": hour_gauge(es),
        }
        return templates.TemplateResponse(request, "list.html", context)

    def rows_fragment(request: Request) -> Response:
        """The list's table body alone, for the poller to swap in."""
        try:
            filters = parse_filters(request.query_params)
        except FilterError as exc:
            return Response(str(exc), status_code=400, media_type="text/plain")
        found = list_opportunities(es, filters)
        return templates.TemplateResponse(
            request, "_rows.html", {"filters": filters, "found": found}
        )

    def state(_: Request) -> Response:
        return JSONResponse(alerts_state(es))

    def opportunities_json(request: Request) -> Response:
        try:
            filters = parse_filters(request.query_params)
        except FilterError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        found = list_opportunities(es, filters)
        return JSONResponse(
            {
                "open": found.open,
                "matched": found.matched,
                "opportunities": [
                    {
                        **row.alert,
                        "category": row.category,
                        "open": row.open,
                        "found_by": [{"source": s, "kind": k} for s, k in row.found_by],
                    }
                    for row in found.rows
                ],
            }
        )

    def detail_page(request: Request) -> Response:
        asin = request.path_params["asin"].upper()
        if len(asin) != 10 or not set(asin) <= ASIN_CHARS:
            return templates.TemplateResponse(
                request, "error.html", {"message": "not an ASIN"}, status_code=404
            )
        detail = product_detail(es, asin)
        if detail.product is None and not detail.routes:
            return templates.TemplateResponse(
                request, "error.html", {"message": f"no product {asin} in the index"}, 404
            )
        lines: list[tuple[str, str]] = []
        for row in detail.routes:
            lines += [(row.alert["buy_market"], "buy"), (row.alert["sell_market"], "sell")]
        if not lines:  # a product without alerts: every market's buy price
            lines = [(market, "buy") for market in detail.history]
        context = {"detail": detail, "chart": build_chart(detail.history, lines)}
        return templates.TemplateResponse(request, "detail.html", context)

    def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/", list_page),
            Route("/fragments/opportunities", rows_fragment),
            Route("/api/state", state),
            Route("/api/opportunities", opportunities_json),
            Route("/product/{asin}", detail_page),
            Route("/healthz", health),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        middleware=[Middleware(HostOriginGuard, policy=policy)],
        exception_handlers={
            ElasticsearchUnavailableError: unavailable,
            elastic_transport.ConnectionError: unavailable,
            elastic_transport.ConnectionTimeout: unavailable,
        },
    )
