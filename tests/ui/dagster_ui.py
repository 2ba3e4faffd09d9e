"""Drive the Dagster UI in headless Chromium: shared by tests/ui and scripts/screenshot_ui.py.

Uses the `playwright` package against the system Chromium (/usr/bin/chromium); playwright's own
browser download (`playwright install`) is never needed, so this works on a closed network.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devservices.dagster_instance import write_instance
from devservices.dagster_processes import WEBSERVER_MODULE

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page

REPO = Path(__file__).resolve().parents[2]
CODE_LOCATION_MODULE = "pipelines.definitions"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_HINT = "Install it with `apt-get install -y chromium` (or `make ui-deps`)."
# Closed network: keep Chromium from phoning home (updates, sync, field trials, QUIC probes).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
)
VIEWPORT = {"width": 1600, "height": 1000}


def resolving_to_loopback(*names: str) -> tuple[str, ...]:
    """Chromium switches under which ``names`` resolve to 127.0.0.1, as a DNS-rebinding name
    does once rebound. Chromium's own Private (Local) Network Access would also stop a rebound
    page's fetch (an http page from the public address space asking loopback); Firefox and
    Safari have no such check, so it is off: the tests see what the server does."""
    rules = ", ".join(f"MAP {name} 127.0.0.1" for name in names)
    return (
        f"--host-resolver-rules={rules}",
        "--disable-features=BlockInsecurePrivateNetworkRequests,"
        "PrivateNetworkAccessSendPreflights,PrivateNetworkAccessRespectPreflightResults,"
        "LocalNetworkAccessChecks",
    )


# localStorage keys the Dagster UI (1.13) reads through useStateWithStorage (JSON values):
# "communityNux" set means the "Join the Dagster community" dialog was already dismissed;
# "dagster-nav-collapsed" shrinks the left navigation to icons so the graph gets the width.
_INIT_SCRIPT = """
window.localStorage.setItem('communityNux', JSON.stringify('1'));
window.localStorage.setItem('dagster-nav-collapsed', JSON.stringify(true));
"""


class UIError(RuntimeError):
    """The webserver or the browser did not get to the expected state."""


class ChromiumMissingError(UIError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _server_info_ok(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_webserver(
    port: int | None = None, timeout_s: float = 90.0, guarded: bool = True
) -> Iterator[str]:
    """Start dagster-webserver for the code location with a throwaway DAGSTER_HOME, behind the
    UI guard as make demo and docker-compose run it (``guarded=False``: plain dagster-webserver,
    as it ran before the guard).

    Yields its base URL once /server_info answers 200; stops it (and the code server it spawned)
    afterwards. Raises UIError with the log tail if it exits or does not come up in time.
    """
    port = port or free_port()
    base_url = f"http://127.0.0.1:{port}"
    # Otherwise another server on that port would answer /server_info in our webserver's place.
    if _server_info_ok(base_url):
        raise UIError(f"port {port} is already serving {base_url}; pick another port")
    with tempfile.TemporaryDirectory(prefix="dagster-ui-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        log_path = Path(tmp) / "webserver.log"
        # The webserver only reads the instance: SQLite in the throwaway home is enough.
        env = {**os.environ, "DAGSTER_STORAGE": "sqlite"}
        env = {**env, **write_instance(home, env), "DAGSTER_HOME": str(home)}
        module = WEBSERVER_MODULE if guarded else "dagster_webserver"
        command = [sys.executable, "-m", module, "-m", CODE_LOCATION_MODULE]
        command += ["-h", "127.0.0.1", "-p", str(port)]
        with log_path.open("wb") as log:
            # Own session so teardown can signal the webserver and its code-server child together.
            proc = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            deadline = time.monotonic() + timeout_s
            while not _server_info_ok(base_url):
                if proc.poll() is not None:
                    raise UIError(
                        f"dagster-webserver exited with code {proc.returncode}; log tail:\n"
                        + _log_tail(log_path)
                    )
                if time.monotonic() > deadline:
                    raise UIError(
                        f"dagster-webserver did not answer {base_url}/server_info within "
                        f"{timeout_s:.0f} s; log tail:\n" + _log_tail(log_path)
                    )
                time.sleep(0.5)
            _check_code_location(base_url, log_path)
            yield base_url
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    for sig, wait_s in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait_s)
            return
        except subprocess.TimeoutExpired:
            continue


def graphql(base_url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """A query as a program sends it: JSON, no Origin (the guard lets it through)."""
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"{base_url}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    if "errors" in payload:
        raise UIError(f"GraphQL query failed: {payload['errors']}")
    return payload["data"]


_LOCATIONS_QUERY = """{ workspaceOrError { ... on Workspace { locationEntries {
    name locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def _check_code_location(base_url: str, log_path: Path) -> None:
    # The webserver also serves when the code location fails to import; the graph would then
    # just be empty, so surface the import error here instead.
    data = graphql(base_url, _LOCATIONS_QUERY)
    for entry in data["workspaceOrError"].get("locationEntries", []):
        loaded = entry["locationOrLoadError"] or {}
        if loaded.get("__typename") == "PythonError":
            raise UIError(
                f"code location {entry['name']} failed to load: {loaded['message'].strip()}\n"
                "webserver log tail:\n" + _log_tail(log_path)
            )


def asset_names(base_url: str) -> list[str]:
    """Node labels the graph will show: the last path segment of every asset key, deduplicated."""
    data = graphql(base_url, "{ assetNodes { assetKey { path } } }")
    return sorted({node["assetKey"]["path"][-1] for node in data["assetNodes"]})


@contextlib.contextmanager
def chromium_page(extra_args: Iterable[str] = ()) -> Iterator[Page]:
    """A page in a fresh headless Chromium profile with the Dagster UI's first-run dialogs off;
    ``extra_args``: more Chromium switches."""
    if not CHROMIUM.exists():
        raise ChromiumMissingError(f"{CHROMIUM} not found. {CHROMIUM_HINT}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise UIError(
            "The `playwright` package is missing: `.venv/bin/pip install -e '.[dev]'` "
            "(never `playwright install`; the system Chromium is used)."
        ) from exc
    with (
        tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile,
        sync_playwright() as playwright,
    ):
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_FLAGS, *extra_args],
            viewport=VIEWPORT,
        )
        try:
            context.add_init_script(_INIT_SCRIPT)
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def _dismiss_community_dialog(page: Page) -> None:
    # Fallback only: the init script normally keeps this dialog from opening at all.
    dialog = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    if dialog.is_visible():
        dialog.get_by_role("button", name="Skip").click()
        dialog.wait_for(state="hidden", timeout=5_000)


def _name_boxes(page: Page, names: Iterable[str]) -> list[tuple[float, float, float, float]]:
    boxes = []
    for name in names:
        box = _name_locator(page, name).bounding_box()
        boxes.append((box["x"], box["y"], box["width"], box["height"]) if box else (0, 0, 0, 0))
    return boxes


def _name_locator(page: Page, name: str) -> Locator:
    # Asset and group nodes are HTML inside the SVG's <foreignObject>s; exact text means the
    # full-size node (zoomed-out "minimal" nodes middle-truncate long names).
    return page.locator("svg foreignObject").get_by_text(name, exact=True).first


def show_asset_graph(
    page: Page, base_url: str, names: Iterable[str], timeout_s: float = 30.0
) -> None:
    """Open the global asset lineage with every group expanded and wait until `names` render.

    Returns once the graph has stopped moving (the UI animates its zoom-to-fit after layout).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    names = list(names)
    timeout_ms = timeout_s * 1000
    page.goto(f"{base_url}/asset-groups", wait_until="domcontentloaded", timeout=timeout_ms)
    # The graph is an SVG of <foreignObject> nodes; at first it shows one node per asset group.
    page.locator("svg foreignObject").first.wait_for(timeout=timeout_ms)
    _dismiss_community_dialog(page)

    # The asset tree sidebar is not persisted anywhere; hide it so zoom-to-fit uses the width.
    hide_sidebar = page.locator("button:has([aria-label='panel_show_right'])")
    with contextlib.suppress(Exception):  # cosmetic only: the graph is still checked below
        hide_sidebar.first.click(timeout=3_000)

    # With several groups the lineage opens collapsed (one node per group). Alt+E is the UI's
    # own "Expand all groups" toggle; a fresh profile has nothing expanded, so it expands.
    if names and not _name_locator(page, names[0]).is_visible():
        page.keyboard.press("Alt+KeyE")
    for name in names:
        try:
            _name_locator(page, name).wait_for(state="visible", timeout=timeout_ms)
        except PlaywrightTimeoutError as exc:
            shown = page.locator("svg foreignObject").evaluate_all(
                "nodes => nodes.map(node => node.textContent.slice(0, 40))"
            )
            raise UIError(
                f"asset {name!r} did not appear in the lineage graph within {timeout_s:.0f} s; "
                f"graph nodes show: {shown}"
            ) from exc

    # Node status rows say "Loading…" until the live-data query answers (slow on a cold server).
    loading = page.locator("svg foreignObject").get_by_text(re.compile(r"^Loading"))
    deadline = time.monotonic() + timeout_s
    while loading.count():
        if time.monotonic() > deadline:
            raise UIError(f"asset live data still loading after {timeout_s:.0f} s")
        page.wait_for_timeout(250)

    previous = _name_boxes(page, names)
    stable = 0
    while stable < 3:
        if time.monotonic() > deadline:
            raise UIError("the asset graph kept moving; zoom-to-fit never settled")
        page.wait_for_timeout(250)
        current = _name_boxes(page, names)
        stable = stable + 1 if current == previous else 0
        previous = current
    _dismiss_community_dialog(page)


def names_outside_viewport(page: Page, names: Iterable[str]) -> list[str]:
    names = list(names)
    width, height = VIEWPORT["width"], VIEWPORT["height"]
    outside = []
    for name, (x, y, w, h) in zip(names, _name_boxes(page, names), strict=True):
        if w == 0 or x < 0 or y < 0 or x + w > width or y + h > height:
            outside.append(name)
    return outside
