"""`dagster dev` (webserver + daemon + code servers) as one process group that is always stopped.

Shared by `make demo`, the latency benchmark and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

from devservices.dagster_instance import write_instance

REPO = Path(__file__).resolve().parent.parent
DAGSTER = Path(sys.executable).parent / "dagster"
# The code location as workspace.yaml names it; the CLI's `-w workspace.yaml` commands (sensor
# and schedule start, backfills) address the same location, so their state applies here.
LOCATION = "arbitrage"
STOP_GRACE_S = 20.0

WORKSPACE_QUERY = """
{
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


class DagsterDevError(RuntimeError):
    """dagster dev exited or did not load the code location; the message ends with its log."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_PR_SET_PDEATHSIG = 1


def _prepare_child() -> None:
    """In the child, before exec: take SIGINT as a stop signal, and die with the parent."""
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored: `dagster dev` would then never see the stop signal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    # If whatever started it is killed outright (SIGKILL: no `finally` runs), the kernel sends
    # dagster dev SIGTERM, and dagster dev stops its webserver, daemon and code server.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class DagsterDev:
    """A `dagster dev` with its own DAGSTER_HOME, holding the repo's dagster.yaml; its storage
    (PostgreSQL, or SQLite with DAGSTER_STORAGE=sqlite) is set up by `write_instance`."""

    def __init__(self, home: Path, env: Mapping[str, str], port: int | None = None) -> None:
        self.home = home
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "dagster-dev.log"
        # `env` plus what the instance's storage block reads; everything started here gets it.
        self.env = {**env, **write_instance(home, env), "DAGSTER_HOME": str(home)}
        self.process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()

    def start(self, timeout_s: float = 120.0) -> None:
        """Start it and wait until the webserver has loaded the code location."""
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(DAGSTER),
                    "dev",
                    "-w",
                    "workspace.yaml",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "--code-server-log-level",
                    "info",
                ],
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: webserver, daemon, code server and run workers.
                start_new_session=True,
                preexec_fn=_prepare_child,
            )
        deadline = time.monotonic() + timeout_s
        while not self._location_loaded():
            if self.process.poll() is not None:
                raise DagsterDevError(f"dagster dev exited early; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise DagsterDevError(
                    f"dagster dev did not load {LOCATION} within {timeout_s:.0f}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(1.0)

    def stop(self) -> None:
        """SIGINT to the whole group (what Ctrl-C does), SIGKILL if it lingers; then anything
        still running under this DAGSTER_HOME (code servers may start sessions of their own).

        A second Ctrl-C or a SIGTERM while it stops does not cut the cleanup short: it turns the
        grace period into an immediate SIGKILL of everything started here.
        """
        process = self.process
        if process is None:
            return
        hurry: list[int] = []
        with _stop_signals_noted(hurry):
            if process.poll() is None:
                _signal_group(process.pid, signal.SIGINT)
                deadline = time.monotonic() + STOP_GRACE_S
                while process.poll() is None and not hurry and time.monotonic() < deadline:
                    time.sleep(0.1)
            self._kill_everything(process)
        self._session.close()
        self.process = None

    def _kill_everything(self, process: subprocess.Popen[bytes]) -> None:
        _signal_group(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        for pid in _processes_mentioning(str(self.home)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def wait(self) -> None:
        if self.process is not None:
            self.process.wait()

    def in_process_group(self, pid: int) -> bool:
        assert self.process is not None
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self._session.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise DagsterDevError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def _location_loaded(self) -> bool:
        try:
            workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except (requests.RequestException, ValueError, DagsterDevError):
            return False
        if workspace["__typename"] != "Workspace":
            return False
        return any(
            entry["name"] == LOCATION
            and (entry["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for entry in workspace["locationEntries"]
        )


def url_answers(url: str) -> bool:
    """Whether something already serves Dagster's /server_info at this base URL."""
    try:
        return requests.get(f"{url}/server_info", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextlib.contextmanager
def _stop_signals_noted(noted: list[int]) -> Iterator[None]:
    """While stopping, SIGINT and SIGTERM are noted in ``noted`` instead of raising (only the
    main thread can set handlers; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda number, _frame: noted.append(number))
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found
