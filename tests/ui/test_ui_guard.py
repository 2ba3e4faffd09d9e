"""The UI guard (arbitrage/web/guard.py) in headless Chromium: a page from another origin and a
DNS-rebinding page cannot drive the Dagster UI, which still works from its own origin.

Starts the webserver the way make demo runs it (behind the guard, throwaway DAGSTER_HOME, free
port; no daemon, so a launched run waits in the queue) and, in the slow case, a plain
dagster-webserver as it ran before the guard, where the same page does launch runs. Needs
neither Kafka nor Elasticsearch. Fails, never skips, without Chromium.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from tests.ui.attack_page import (
    LAUNCH_MUTATION,
    LAUNCHES,
    WEBSOCKET,
    attack_site,
    launch_variables,
    launched,
    visit,
)
from tests.ui.dagster_ui import (
    CHROMIUM,
    CHROMIUM_HINT,
    CODE_LOCATION_MODULE,
    UIError,
    chromium_page,
    resolving_to_loopback,
    running_webserver,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

# `-m pipelines.definitions`: the code location is named after the module.
LOCATION = CODE_LOCATION_MODULE
REBOUND_NAME = "evil.example"
REBINDING_ARGS = resolving_to_loopback(REBOUND_NAME)
# A same-origin fetch from the page, as a rebound page or the UI's own code would send it:
# JSON, which only a page of the UI's origin (or one whose name now resolves to it) can send.
SAME_ORIGIN_LAUNCH = """async ([query, variables]) => {
  const response = await fetch("/graphql", {method: "POST",
    headers: {"Content-Type": "application/json"}, body: JSON.stringify({query, variables})});
  return [response.status, await response.text()];
}"""
SAME_ORIGIN_SOCKET = """() => new Promise((resolve) => {
  const socket = new WebSocket(location.origin.replace(/^http/, "ws") + "/graphql", "graphql-ws");
  socket.onopen = () => socket.send(JSON.stringify({type: "connection_init", payload: {}}));
  socket.onmessage = (message) => { resolve(message.data); socket.close(); };
  socket.onerror = () => resolve("refused");
})"""


def need_chromium() -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"The UI tests need Chromium at {CHROMIUM}. {CHROMIUM_HINT}", pytrace=False)


@pytest.fixture(scope="module")
def guarded_url() -> Iterator[str]:
    need_chromium()
    try:
        with running_webserver(timeout_s=90.0) as url:
            yield url
    except UIError as exc:
        pytest.fail(str(exc), pytrace=False)


def test_a_page_from_another_origin_cannot_launch_runs_or_subscribe(guarded_url: str) -> None:
    with attack_site() as site, chromium_page() as page:
        outcome = visit(page, site, guarded_url, LOCATION)
    got_through = {tag: launched(guarded_url, tag) for tag in LAUNCHES}
    assert not any(got_through.values()), f"runs launched by the attack page: {got_through}"
    assert outcome[WEBSOCKET] == "refused", outcome


def test_a_dns_rebinding_page_is_refused(guarded_url: str) -> None:
    """evil.example resolves to 127.0.0.1 in this browser (as after a rebinding), so its page
    at evil.example:<port> is same-origin with the UI: only the Host header tells them apart."""
    port = urlsplit(guarded_url).port
    rebound = f"http://{REBOUND_NAME}:{port}"
    with chromium_page(REBINDING_ARGS) as page:
        # The attacker's page, served before the name was rebound (here: by the browser itself).
        page.route(
            f"{rebound}/rebound.html",
            lambda route: route.fulfill(status=200, content_type="text/html", body="<p>hi</p>"),
        )
        page.goto(f"{rebound}/rebound.html")
        status, text = page.evaluate(
            SAME_ORIGIN_LAUNCH, [LAUNCH_MUTATION, launch_variables(LOCATION, "rebinding")]
        )
        reading = page.goto(f"{rebound}/server_info")
        assert reading is not None
        read_status, read_text = reading.status, reading.text()
    assert status == 403 and "does not answer to the host" in text, (status, text)
    assert read_status == 403, read_text  # nor can it read the UI
    assert not launched(guarded_url, "rebinding")


def test_the_ui_works_through_the_guard(guarded_url: str) -> None:
    need_chromium()
    with chromium_page() as page:
        page.goto(f"{guarded_url}/runs", wait_until="domcontentloaded")
        page.get_by_role("link", name="Runs").first.wait_for(timeout=30_000)
        # The UI's own GraphQL (POST, JSON, its own Origin) and WebSocket pass.
        status, text = page.evaluate(
            SAME_ORIGIN_LAUNCH, [LAUNCH_MUTATION, launch_variables(LOCATION, "own-origin")]
        )
        assert status == 200, text
        answer = json.loads(text)["data"]["launchRun"]
        assert answer["__typename"] == "LaunchRunSuccess", answer
        ack = page.evaluate(SAME_ORIGIN_SOCKET)
        assert json.loads(ack)["type"] == "connection_ack", ack
    # The UI rendering its pages through the guard: tests/ui/test_asset_graph_page.py.
    assert launched(guarded_url, "own-origin") == [answer["run"]["runId"]]


@pytest.mark.slow
def test_the_same_page_launches_runs_on_a_webserver_without_the_guard() -> None:
    """The proof that the tests above can fail: dagster-webserver as it ran before the guard
    obeys every attempt of the attack page and of the rebound page."""
    need_chromium()
    try:
        with running_webserver(timeout_s=90.0, guarded=False) as url, attack_site() as site:
            with chromium_page() as page:
                outcome = visit(page, site, url, LOCATION)
            got_through = {tag: launched(url, tag) for tag in LAUNCHES}
            port = urlsplit(url).port
            rebound = f"http://{REBOUND_NAME}:{port}"
            with chromium_page(REBINDING_ARGS) as page:
                page.route(
                    f"{rebound}/rebound.html",
                    lambda route: route.fulfill(status=200, content_type="text/html", body="hi"),
                )
                page.goto(f"{rebound}/rebound.html")
                status, text = page.evaluate(
                    SAME_ORIGIN_LAUNCH, [LAUNCH_MUTATION, launch_variables(LOCATION, "rebinding")]
                )
            rebound_runs = launched(url, "rebinding")
    except UIError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert all(len(runs) == 1 for runs in got_through.values()), got_through
    assert outcome[WEBSOCKET].startswith("answered") and "connection_ack" in outcome[WEBSOCKET]
    assert status == 200 and "LaunchRunSuccess" in text, (status, text)
    assert len(rebound_runs) == 1
