"""`make demo` stopped the ways people stop it leaves no Dagster process behind.

A demo sent SIGINT and then SIGTERM used to leave `dagster dev` with its webserver, daemon and
code server running, sensors on, consuming the topics of whatever ran next.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devservices.dagster_dev import free_port, url_answers

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def processes_of(home: Path) -> list[int]:
    """Processes whose environment points at this DAGSTER_HOME (everything the demo started)."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


def start_demo(home: Path, wait_for_ui: bool = True) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_PORT": str(port),
        # Nothing scheduled fires while the test runs.
        "KEEPA_PULL_CRON": "0 0 1 1 *",
    }
    demo = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    if not wait_for_ui:
        # Until dagster dev runs beside the demo (it is still loading the code location).
        while len(processes_of(home)) < 2:
            assert demo.poll() is None, "the demo exited before it started dagster dev"
            assert time.monotonic() < deadline, "the demo did not start dagster dev in 180 s"
            time.sleep(0.2)
        return demo, url
    while not url_answers(url):
        assert demo.poll() is None, "the demo exited before its UI answered"
        assert time.monotonic() < deadline, "the demo's UI did not answer within 180 s"
        time.sleep(1)
    return demo, url


def assert_nothing_left(home: Path, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := processes_of(home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not left, f"processes still running under {home}: {left}"


def test_sigint_then_sigterm_while_starting_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    demo, url = start_demo(home, wait_for_ui=False)
    time.sleep(2.0)  # dagster dev is starting its webserver, daemon and code server
    demo.send_signal(signal.SIGINT)
    time.sleep(1.0)
    demo.send_signal(signal.SIGTERM)  # impatient: a second stop signal during the cleanup
    demo.wait(timeout=60)
    assert_nothing_left(home)
    assert not url_answers(url)


def test_a_killed_demo_takes_dagster_dev_with_it(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    demo, url = start_demo(home)
    demo.kill()  # SIGKILL: no cleanup code of the demo runs
    demo.wait(timeout=10)
    assert_nothing_left(home, within_s=45.0)
    assert not url_answers(url)


def test_sigint_then_sigterm_while_running_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    demo, url = start_demo(home)
    assert len(processes_of(home)) >= 3  # the demo, dagster dev, its webserver, ...
    demo.send_signal(signal.SIGINT)
    time.sleep(1.0)
    demo.send_signal(signal.SIGTERM)
    demo.wait(timeout=60)
    assert_nothing_left(home)
    assert not url_answers(url)
