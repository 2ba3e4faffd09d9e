"""Dagster as it runs in production, on one machine: the code location's gRPC server,
`dagster-webserver` (behind the Host/Origin guard of arbitrage/web/guard.py, `python -m
pipelines.webserver`) and `dagster-daemon run`, three supervised processes (devservices.supervisor)
with a log each in DAGSTER_HOME, always stopped.

Shared by `make demo`, the latency benchmark and the end-to-end tests.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests

from devservices.dagster_instance import GRPC_HOST, project_path, write_instance
from devservices.process import port_open
from devservices.supervisor import DEFAULT_BACKOFF, Backoff, Event, Exited, Program, Supervisor

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# The code location as workspace.yaml names it; the CLI's `-w workspace.yaml` commands (sensor
# and schedule start, backfills) address the same location, so their state applies here.
LOCATION = "arbitrage"
DEFINITIONS_MODULE = "pipelines.definitions"
CODE_SERVER_MODULE = "pipelines.code_server"
# dagster-webserver behind the Host/Origin guard, in one process (docs/decisions.md, 41).
WEBSERVER_MODULE = "pipelines.webserver"
CODE_SERVER = "code server"
WEBSERVER = "webserver"
DAEMON = "daemon"
# Not Dagster's, but supervised beside it when asked for (``web_port``): `arbitrage web`.
OPPORTUNITIES_PAGE = "opportunities page"
STOP_GRACE_S = 20.0

# Runs still going when the processes stop (the sensors' following runs wait for records) are
# terminated the way the UI's Terminate does: each finishes its batch, commits and ends
# CANCELED. Stopping the processes alone would interrupt them and Dagster would mark them
# FAILURE, which the sensors then retry only after their backoff.
END_RUNS_S = 30.0
IN_FLIGHT_QUERY = """
query InFlight {
  runsOrError(filter: {statuses: [QUEUED, NOT_STARTED, STARTING, STARTED, CANCELING]}) {
    ... on Runs { results { runId status } }
  }
}
"""
TERMINATE_MUTATION = """
mutation Terminate($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunSuccess { run { runId status } }
    ... on TerminateRunFailure { message }
    ... on PythonError { message }
  }
}
"""
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


class DagsterStartError(RuntimeError):
    """A Dagster process exited or the code location did not load; the message ends with logs."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DagsterProcesses:
    """Code server, webserver and daemon with their own DAGSTER_HOME, holding the repo's
    dagster.yaml; its storage (PostgreSQL, or SQLite with DAGSTER_STORAGE=sqlite) is set up by
    `write_instance`. workspace.yaml finds the code server at DAGSTER_GRPC_HOST/PORT, set here."""

    def __init__(
        self,
        home: Path,
        env: Mapping[str, str],
        port: int | None = None,
        grpc_port: int | None = None,
        on_event: Callable[[Event], None] = lambda _event: None,
        backoff: Backoff = DEFAULT_BACKOFF,
        web_port: int | None = None,
    ) -> None:
        self.home = home
        self.web_port = web_port
        self.port = port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # `env` plus what the instance's storage block and workspace.yaml read; everything
        # started here gets it.
        self.env = {
            **env,
            **write_instance(home, env),
            "DAGSTER_HOME": str(home),
            "DAGSTER_GRPC_HOST": GRPC_HOST,
            "DAGSTER_GRPC_PORT": str(self.grpc_port),
            **project_path(env),
        }
        # Not DAGSTER_HOME/logs: Dagster's telemetry moves that directory away (to .logs_queue).
        self.logs = {
            CODE_SERVER: home / "process-logs" / "code-server.log",
            WEBSERVER: home / "process-logs" / "webserver.log",
            DAEMON: home / "process-logs" / "daemon.log",
        }
        programs = [
            Program(CODE_SERVER, self._code_server_argv(), self.logs[CODE_SERVER]),
            Program(WEBSERVER, self._webserver_argv(), self.logs[WEBSERVER]),
            Program(DAEMON, self._daemon_argv(), self.logs[DAEMON]),
        ]
        if web_port is not None:
            self.logs[OPPORTUNITIES_PAGE] = home / "process-logs" / "opportunities-page.log"
            argv = (str(BIN / "arbitrage"), "web", "--port", str(web_port))
            programs.append(Program(OPPORTUNITIES_PAGE, argv, self.logs[OPPORTUNITIES_PAGE]))
        self.supervisor = Supervisor(
            programs,
            env=self.env,
            cwd=REPO,
            backoff=backoff,
            on_event=on_event,
        )
        self._session = requests.Session()

    def _code_server_argv(self) -> tuple[str, ...]:
        # Dagster's `dagster api grpc`, with run processes forked from a preloaded interpreter.
        return (
            sys.executable,
            "-m",
            CODE_SERVER_MODULE,
            "--module-name",
            DEFINITIONS_MODULE,
            "--working-directory",
            str(REPO),
            "--location-name",
            LOCATION,
            "--host",
            GRPC_HOST,
            "--port",
            str(self.grpc_port),
            "--log-level",
            "info",
        )

    def _webserver_argv(self) -> tuple[str, ...]:
        return (
            sys.executable,
            "-m",
            WEBSERVER_MODULE,
            "--workspace",
            str(REPO / "workspace.yaml"),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        )

    def _daemon_argv(self) -> tuple[str, ...]:
        return (str(BIN / "dagster-daemon"), "run", "--workspace", str(REPO / "workspace.yaml"))

    def start(self, timeout_s: float = 120.0) -> None:
        """Start the code server, then (once it listens) the webserver and the daemon; return
        when the webserver has loaded the code location. Stops everything if that fails."""
        deadline = time.monotonic() + timeout_s
        try:
            self.supervisor.start([CODE_SERVER])
            # The webserver and daemon load the location at start; a code server that is not
            # listening yet would cost them a reload cycle.
            self._wait(
                lambda: port_open(GRPC_HOST, self.grpc_port), deadline, "code server listening"
            )
            self.supervisor.start([WEBSERVER, DAEMON])
            if self.web_port is not None:
                self.supervisor.start([OPPORTUNITIES_PAGE])
            self._wait(self._location_loaded, deadline, f"the webserver loading {LOCATION}")
            if self.web_port is not None:
                port = self.web_port
                self._wait(lambda: port_open("127.0.0.1", port), deadline, "the opportunities page")
        except KeyboardInterrupt:
            # Stopped while starting (Ctrl-C before the UI is up): the daemon may have launched
            # runs already; they end as on any stop (CANCELED), not killed mid-launch (FAILURE).
            self.stop(end_runs_s=END_RUNS_S)
            raise
        except BaseException:
            self.stop()
            raise

    def _wait(self, condition: Callable[[], bool], deadline: float, what: str) -> None:
        while not condition():
            # A process that dies while starting has a problem a restart will not fix.
            died = [event for event in self.supervisor.events if isinstance(event, Exited)]
            if died:
                event = died[0]
                raise DagsterStartError(
                    f"the {event.program} {event.how} while starting (waiting for {what}); "
                    f"{self.log_tails()}"
                )
            if time.monotonic() > deadline:
                raise DagsterStartError(f"no {what} in time; {self.log_tails()}")
            time.sleep(0.5)

    def stop(self, end_runs_s: float = 0.0) -> None:
        """End the runs in flight first (up to ``end_runs_s``; a second Ctrl-C skips it), then
        SIGTERM to each process group (run workers included), SIGKILL after STOP_GRACE_S or at
        a second stop signal; see Supervisor.stop."""
        if end_runs_s > 0:
            with contextlib.suppress(KeyboardInterrupt):
                # The daemon first: its sensors would request runs, and its run queue launch
                # them, while the runs in flight finish their batch; a run left queued or
                # launched after end_runs looked would be killed with the code server.
                self.supervisor.retire(DAEMON)
                self.end_runs(end_runs_s)
        self.supervisor.stop(STOP_GRACE_S)
        self._session.close()

    def end_runs(self, timeout_s: float) -> int:
        """Terminate every run in flight through the webserver and wait until none is left or
        ``timeout_s`` has passed; returns how many were asked to end. A webserver that does not
        answer yet (a stop during start-up, when the daemon may have launched runs already) is
        waited for while its process lives; without one the processes are stopped anyway."""
        deadline = time.monotonic() + timeout_s
        # Asked again on every poll: the sensors and the daemon are still on, so a run can be
        # requested or dequeued while the others finish their batch; one left out would be
        # killed with its code server below and end FAILURE.
        asked: set[str] = set()
        while time.monotonic() < deadline:
            try:
                in_flight = self._in_flight()
                if not in_flight:
                    break
                for run in in_flight:
                    if run["runId"] not in asked:
                        self.graphql(TERMINATE_MUTATION, {"runId": run["runId"]})
                        asked.add(run["runId"])
            except (requests.RequestException, ValueError, DagsterStartError):
                if not self.supervisor.alive(WEBSERVER):
                    break
            time.sleep(0.5)
        return len(asked)

    def _in_flight(self) -> list[dict[str, str]]:
        runs = self.graphql(IN_FLIGHT_QUERY)["runsOrError"]
        return list(runs.get("results", []))

    def wait(self) -> None:
        """Block until stopped from outside (Ctrl-C, SIGTERM): the supervisor keeps the three
        running meanwhile."""
        while True:
            time.sleep(1.0)

    def log_tails(self, lines: int = 30) -> str:
        return "\n".join(f"{name} log tail:\n{self.log_tail(name, lines)}" for name in self.logs)

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs[name]
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self._session.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise DagsterStartError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def _location_loaded(self) -> bool:
        try:
            workspace = self.graphql(WORKSPACE_QUERY)["workspaceOrError"]
        except (requests.RequestException, ValueError, DagsterStartError):
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
