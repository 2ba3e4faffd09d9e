"""The UI guard's decisions (arbitrage/web/guard.py), request by request; the real browser and
webserver are in tests/e2e/test_ui_guard.py."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest

from arbitrage.web.guard import (
    GuardConfigError,
    GuardPolicy,
    allowed_hosts_from_env,
    has_mutation,
    host_name,
    media_type,
    refusal,
)

DAGSTER = GuardPolicy.with_names(["dagster.example.com"], graphql=True)
PAGE = GuardPolicy.with_names([])
UI = "127.0.0.1:3000"
LAUNCH = "mutation { launchRun(executionParams: {}) { __typename } }"


def check(
    policy: GuardPolicy = DAGSTER,
    method: str = "GET",
    path: str = "/",
    query: str = "",
    websocket: bool = False,
    **headers: str,
) -> str | None:
    names = {"content_type": "content-type"}
    sent = {names.get(key, key): value for key, value in headers.items()}
    sent.setdefault("host", UI)
    return refusal(
        policy, method=method, path=path, query_string=query, headers=sent, websocket=websocket
    )


@pytest.mark.parametrize(
    "host",
    [UI, "localhost:3000", "[::1]:3000", "127.0.0.1", "LOCALHOST:8000", "dagster.example.com"],
)
def test_own_names_on_any_port_pass(host: str) -> None:
    # The port is not compared: an SSH tunnel or Docker's mapping changes it.
    assert check(host=host) is None


@pytest.mark.parametrize(
    "host",
    ["evil.example:3000", "evil.example", "127.0.0.1.evil.example:3000", "localhost.:3000", "",
     "127.0.0.1:3000:1", "[::1", "127.0.0.1:x", "0.0.0.0:3000"],
)  # fmt: skip
def test_other_hosts_are_refused_on_every_path(host: str) -> None:
    for policy in (DAGSTER, PAGE):
        reason = check(policy, host=host)
        assert reason is not None and "does not answer to the host" in reason


def test_configured_names_must_be_names() -> None:
    for bad in ("dagster.example.com:3000", "http://dagster.example.com", "a/b", "u@host", "a b"):
        with pytest.raises(GuardConfigError, match="ARBITRAGE_UI_ALLOWED_HOSTS"):
            GuardPolicy.with_names([bad])
    extra = allowed_hosts_from_env({"ARBITRAGE_UI_ALLOWED_HOSTS": "a.example, b.example,"})
    assert {"a.example", "b.example"} <= GuardPolicy.with_names(extra).names
    assert allowed_hosts_from_env({}) == []
    names = GuardPolicy.with_names([" OPS.example. ", "", "192.168.1.5", "[fd00::5]"]).names
    assert {"ops.example", "192.168.1.5", "[fd00::5]"} <= names


def test_state_changes_need_the_ui_own_origin() -> None:
    json_post = {"method": "POST", "path": "/graphql", "content_type": "application/json"}
    assert check(**json_post, origin=f"http://{UI}") is None
    # Behind a TLS proxy that keeps the Host: the scheme differs, the host is the same.
    assert (
        check(**json_post, host="dagster.example.com", origin="https://dagster.example.com") is None
    )
    # No Origin and no Referer: not a browser (browsers send Origin with every POST).
    assert check(**json_post) is None
    assert check(**json_post, referer=f"http://{UI}/runs") is None
    for origin in ("http://evil.example", "null", "http://127.0.0.1:8080", "http://[::1"):
        reason = check(**json_post, origin=origin)
        assert reason is not None and "cross-origin" in reason, origin
    # Origin wins over Referer; Referer counts when Origin is absent.
    assert check(**json_post, origin="http://evil.example", referer=f"http://{UI}/") is not None
    assert check(**json_post, referer="http://evil.example/page") is not None
    # Any unsafe method, on any path (Dagster's report_asset_* endpoints take POST).
    for method in ("PUT", "DELETE", "PATCH", "post"):
        assert check(method=method, path="/report_asset_materialization/a", origin="null")
    for method in ("GET", "HEAD", "OPTIONS"):
        assert check(method=method, path="/runs", origin="http://evil.example") is None


def test_websockets_need_the_ui_own_origin() -> None:
    assert check(path="/graphql", websocket=True, origin=f"http://{UI}") is None
    assert check(path="/graphql", websocket=True) is None  # a program, not a browser
    reason = check(path="/graphql", websocket=True, origin="http://evil.example")
    assert reason is not None and "cross-origin" in reason


def test_graphql_post_takes_json_only() -> None:
    ok = {"method": "POST", "path": "/graphql"}
    assert check(**ok, content_type="application/json") is None
    assert check(**ok, content_type="Application/JSON; charset=utf-8") is None
    assert check(**ok, content_type="application/graphql") is None
    # The CORS "simple" types a no-cors fetch or a form can send, one dressed as JSON for
    # Dagster's substring test, and none at all.
    for content_type in (
        "text/plain",
        "text/plain; x=application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "",
    ):
        reason = check(**ok, content_type=content_type)
        assert reason is not None and "application/json" in reason, content_type
    # Under a path prefix too; not on the opportunities page, which has no GraphQL.
    assert check(method="POST", path="/dagster/graphql", content_type="text/plain")
    assert check(PAGE, method="POST", path="/graphql", content_type="text/plain") is None


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_graphql_mutations_over_get_are_refused_whatever_the_headers(method: str) -> None:
    # An <img> with referrerpolicy=no-referrer sends neither Origin nor Referer.
    for query in (
        LAUNCH,
        "# comment\nmutation{launchRun(executionParams:{}){__typename}}",
        "query A { version } mutation B { launchRun(executionParams: {}) { __typename } }",
    ):
        reason = check(method=method, path="/graphql", query=urlencode({"query": query}))
        assert reason is not None and "GET" in reason, query
    # The last `query` parameter is the one Starlette reads; every one is looked at.
    twice = urlencode([("query", LAUNCH), ("query", "{ version }")])
    assert check(method=method, path="/graphql", query=twice)
    assert check(method=method, path="/graphql", query=urlencode({"query": "{ version }"})) is None


def test_helpers() -> None:
    assert host_name("LocalHost:3000") == "localhost"
    assert host_name("[::1]:80") == "[::1]"
    assert host_name("a:b") is None
    assert media_type(" Text/Plain ;charset=x") == "text/plain"
    assert has_mutation(urlencode({"query": "mutation{x}"}))
    assert not has_mutation(urlencode({"query": "mutation{"}))  # does not parse: not executed
    assert not has_mutation(urlencode({"variables": "mutation{x}"}))
