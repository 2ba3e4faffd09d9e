"""The webserver as make demo runs it (devservices.dagster_processes: code server, guarded
webserver, daemon, PostgreSQL instance) refuses what a page from another origin or a rebound
name sends, and a plain dagster-webserver on the same instance and code server obeys it: the
guard is the only difference. The tests in tests/ui/test_ui_guard.py do the same on a
webserver with its own code server; this one checks the demo's and production's shape."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import requests

from devservices.dagster_processes import BIN, LOCATION, REPO, url_answers
from tests.e2e.dagster_api import StartDagster
from tests.ui.attack_page import LAUNCHES, WEBSOCKET, attack_site, launched, low_port, visit
from tests.ui.dagster_ui import CHROMIUM, CHROMIUM_HINT, chromium_page

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]


@contextlib.contextmanager
def plain_webserver(env: Mapping[str, str], log: Path) -> Iterator[str]:
    """dagster-webserver as DagsterProcesses started it before the guard, on the same instance
    and code server (workspace.yaml reads DAGSTER_GRPC_PORT from ``env``)."""
    port = low_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(BIN / "dagster-webserver"), "-w", "workspace.yaml"]
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*argv, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not url_answers(url):
            assert process.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def test_the_demo_webserver_refuses_another_origin_and_a_plain_one_obeys(
    start_dagster: StartDagster, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.fail(f"The UI tests need Chromium at {CHROMIUM}. {CHROMIUM_HINT}", pytrace=False)
    dagster = start_dagster({})
    port = dagster.url.rsplit(":", 1)[1]
    # A rebound name and a foreign Origin, as a program can send them.
    rebound = requests.get(f"{dagster.url}/server_info", headers={"Host": f"evil.example:{port}"})
    assert rebound.status_code == 403, rebound.text
    with attack_site() as site:
        with chromium_page() as page:
            guarded = visit(page, site, dagster.url, LOCATION)
        # The webserver's own clients (end_runs, the tests) send JSON without an Origin.
        refused = {tag: launched(dagster.url, tag) for tag in LAUNCHES}
        assert not any(refused.values()), f"runs launched by the attack page: {refused}"
        assert guarded[WEBSOCKET] == "refused", guarded
        with plain_webserver(dagster.env, tmp_path / "plain-webserver.log") as plain:
            with chromium_page() as page:
                unguarded = visit(page, site, plain, LOCATION)
            got_through = {tag: launched(plain, tag) for tag in LAUNCHES}
    assert all(len(runs) == 1 for runs in got_through.values()), got_through
    assert "connection_ack" in unguarded[WEBSOCKET], unguarded
    # Same instance: the guarded webserver sees the runs the plain one let in.
    assert {tag: launched(dagster.url, tag) for tag in LAUNCHES} == got_through
