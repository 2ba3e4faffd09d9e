"""The guard in front of the two local web UIs (the Dagster webserver and the opportunities
page): an ASGI middleware that refuses, with a 403 and one sentence, what a web page the
operator happens to visit could otherwise make their browser do to them.

* A Host header whose name is not the UI's own (127.0.0.1, localhost, [::1], plus the names
  in ARBITRAGE_UI_ALLOWED_HOSTS): a DNS-rebinding page, whose own name now resolves to
  127.0.0.1, is same-origin with the UI for its browser, but its requests still carry its name.
  The port is not compared: an SSH tunnel or Docker's port mapping changes it, a rebinding page
  cannot change the name.
* A request that changes state (any method but GET, HEAD and OPTIONS, and every WebSocket)
  whose Origin (or, without one, Referer) is not the UI's own origin (scheme aside, the Host it
  was sent to). Browsers send Origin with every such request, no-cors and form posts included;
  a request with neither header comes from a program, which could set either anyway.
* For Dagster's GraphQL endpoint: a mutation over GET or HEAD (Dagster executes those too, and
  an <img> tag with no referrer sends neither header), and a POST whose media type is not
  application/json or application/graphql (text/plain and the form types need no CORS
  preflight; Dagster then reads the query from the URL, and takes any type merely containing
  "application/json" as JSON).

It authenticates nobody: docs/security.md says what it leaves open. Why a middleware in the
webserver's own process rather than a proxy in front of it: docs/decisions.md, 41.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from graphql import GraphQLError, OperationType, parse
from graphql.language import OperationDefinitionNode
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

ALLOWED_HOSTS_ENV = "ARBITRAGE_UI_ALLOWED_HOSTS"
LOOPBACK_NAMES = frozenset({"127.0.0.1", "localhost", "[::1]"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# What a GraphQL POST may carry: neither is a CORS "simple" type, so a cross-origin page can
# send one only after a preflight, which Dagster never grants.
GRAPHQL_MEDIA_TYPES = frozenset({"application/json", "application/graphql"})
GRAPHQL_SEGMENT = "graphql"  # /graphql, or <path prefix>/graphql
LOG = logging.getLogger("arbitrage.ui_guard")
HOST_NAME = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")  # a DNS name, an IPv4 or [IPv6] address


class GuardConfigError(ValueError):
    """ARBITRAGE_UI_ALLOWED_HOSTS names something that is not a host name."""


@dataclass(frozen=True)
class GuardPolicy:
    """Host names the UI answers to, and whether it serves Dagster's GraphQL endpoint."""

    names: frozenset[str] = LOOPBACK_NAMES
    graphql: bool = False

    @classmethod
    def with_names(cls, extra: Iterable[str], *, graphql: bool = False) -> GuardPolicy:
        names = set(LOOPBACK_NAMES)
        for entry in extra:
            name = entry.strip().lower().rstrip(".")
            if not name:
                continue
            if host_name(name) != name or not HOST_NAME.fullmatch(name):
                raise GuardConfigError(
                    f"{ALLOWED_HOSTS_ENV}: {entry.strip()!r} is not a host name (names only, "
                    "comma-separated, without scheme or port: dagster.example.com)"
                )
            names.add(name)
        return cls(frozenset(names), graphql)


def allowed_hosts_from_env(environ: Mapping[str, str]) -> list[str]:
    """The extra host names of ARBITRAGE_UI_ALLOWED_HOSTS (comma-separated)."""
    return [name for name in environ.get(ALLOWED_HOSTS_ENV, "").split(",") if name.strip()]


def host_name(host: str) -> str | None:
    """The name of a Host header value, lower-cased and without the port; None if malformed."""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return None
        name, rest = host[: end + 1], host[end + 1 :]
    else:
        name, _, port = host.partition(":")
        rest = f":{port}" if _ else ""
    if rest and not (rest.startswith(":") and rest[1:].isdigit()):
        return None
    return name or None


def media_type(content_type: str) -> str:
    """The essence of a Content-Type value ("text/plain; x=application/json" → text/plain)."""
    return content_type.partition(";")[0].strip().lower()


def has_mutation(query_string: str) -> bool:
    """Whether any ``query`` parameter of a URL holds a GraphQL document with a mutation.

    Parsed with the graphql-core Dagster executes with, so both read the same operations; a
    document that does not parse is not a mutation (Dagster refuses it too)."""
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        if key != "query":
            continue
        try:
            document = parse(value)
        except GraphQLError:
            continue
        for definition in document.definitions:
            if (
                isinstance(definition, OperationDefinitionNode)
                and definition.operation == OperationType.MUTATION
            ):
                return True
    return False


def _netloc(url: str) -> str | None:
    try:
        return urlsplit(url.strip()).netloc.lower()
    except ValueError:  # an unclosed IPv6 bracket
        return None


def refusal(
    policy: GuardPolicy,
    *,
    method: str,
    path: str,
    query_string: str,
    headers: Mapping[str, str],
    websocket: bool = False,
) -> str | None:
    """Why this request is refused, in one sentence; None to let it through."""
    host = headers.get("host", "")
    if host_name(host) not in policy.names:
        return (
            f"this UI does not answer to the host {host!r} (a DNS-rebinding page would look "
            f"like this); if it is yours, add its name to {ALLOWED_HOSTS_ENV}."
        )
    if websocket or method not in SAFE_METHODS:
        source = headers.get("origin")
        if source is None:
            source = headers.get("referer")
        if source is not None and _netloc(source) != host.strip().lower():
            return (
                f"a page from {source[:100]!r} may not change this UI's state "
                "(cross-origin request)."
            )
    graphql = policy.graphql and path.rstrip("/").rpartition("/")[2] == GRAPHQL_SEGMENT
    if graphql and not websocket:
        if method in ("GET", "HEAD") and has_mutation(query_string):
            return "GraphQL mutations are not taken over GET; POST them as application/json."
        if method == "POST" and media_type(headers.get("content-type", "")) not in (
            GRAPHQL_MEDIA_TYPES
        ):
            return "GraphQL over POST takes Content-Type application/json only."
    return None


class HostOriginGuard:
    """ASGI middleware applying ``refusal`` to every HTTP request and WebSocket handshake."""

    def __init__(self, app: ASGIApp, policy: GuardPolicy) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        websocket = scope["type"] == "websocket"
        method = "GET" if websocket else scope["method"]
        query_string = scope.get("query_string", b"").decode("latin-1")
        reason = refusal(
            self.policy,
            method=method,
            path=scope["path"],
            query_string=query_string,
            headers=headers,
            websocket=websocket,
        )
        if reason is None:
            await self.app(scope, receive, send)
            return
        LOG.warning("refused %s %r: %s", method, scope["path"], reason)
        if websocket:
            # Closing before accepting makes the server answer the handshake with a 403.
            await receive()  # websocket.connect
            await send({"type": "websocket.close", "code": 1008})
            return
        response = PlainTextResponse(f"Refused by the UI guard: {reason}\n", status_code=403)
        await response(scope, receive, send)
