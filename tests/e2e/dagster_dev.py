"""`dagster dev` (webserver + daemon + code server) as a test sees it: a process group it starts
and always stops, and the webserver's GraphQL API at /graphql for runs, their logs and sensors."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
# Definitions(...) in a module: the location is named after the module, the repository is implicit.
LOCATION = "pipelines.definitions"
REPOSITORY = "__repository__"
SENSOR_NAME_TAG = "dagster/sensor_name"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
STOP_GRACE_S = 20.0

RUNS_QUERY = """
query Runs($filter: RunsFilter, $limit: Int) {
  runsOrError(filter: $filter, limit: $limit) {
    __typename
    ... on Runs {
      results {
        runId jobName status creationTime startTime endTime runConfig
        tags { key value }
      }
    }
    ... on InvalidPipelineRunsFilterError { message }
    ... on PythonError { message }
  }
}
"""

LOGS_QUERY = """
query Logs($runId: ID!, $cursor: String) {
  logsForRun(runId: $runId, afterCursor: $cursor) {
    __typename
    ... on EventConnection {
      events { __typename ... on MessageEvent { message timestamp eventType } }
      cursor
      hasMore
    }
    ... on RunNotFoundError { message }
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

SENSOR_QUERY = """
query Sensor($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status } }
    ... on PythonError { message }
  }
}
"""


@dataclass(frozen=True)
class Run:
    """One run as the GraphQL API reports it (times in epoch seconds)."""

    run_id: str
    job_name: str
    status: str
    creation_time: float
    start_time: float | None
    end_time: float | None
    tags: dict[str, str]
    run_config: dict[str, Any]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def offset_range(self, op: str) -> tuple[int, int, int]:
        """(partition, start, end) of a sensor-launched stage run."""
        (span,) = self.run_config["ops"][op]["config"]["offset_ranges"]
        return span["partition"], span["start"], span["end"]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _default_sigint() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and Python
    # keeps an ignored SIGINT ignored: `dagster dev` would then never see the stop signal.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDev:
    """A running `dagster dev` on a free port with its own DAGSTER_HOME."""

    def __init__(self, home: Path, env: Mapping[str, str]) -> None:
        self.home = home
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = home / "dagster-dev.log"
        home.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
        self.env = {**env, "DAGSTER_HOME": str(home)}
        self.process: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout_s: float = 120.0) -> None:
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    str(DAGSTER),
                    "dev",
                    "-m",
                    LOCATION,
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
                preexec_fn=_default_sigint,
            )
        deadline = time.monotonic() + timeout_s
        while not self._location_loaded():
            if self.process.poll() is not None:
                raise AssertionError(f"dagster dev exited early; log tail:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"dagster dev did not load {LOCATION} within {timeout_s:.0f}s; "
                    f"log tail:\n{self.log_tail()}"
                )
            time.sleep(1.0)

    def stop(self) -> None:
        """SIGINT to the whole process group (what Ctrl-C does), SIGKILL if it lingers."""
        process = self.process
        if process is None:
            return
        group = process.pid
        if process.poll() is None:
            _signal_group(group, signal.SIGINT)
            try:
                process.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                _signal_group(group, signal.SIGKILL)
                process.wait(timeout=30)
        # Run workers and code servers are in the group too; none may outlive the test.
        _signal_group(group, signal.SIGKILL)
        self._session.close()

    def in_process_group(self, pid: int) -> bool:
        assert self.process is not None
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # ------------------------------------------------------------------ GraphQL

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None) -> dict[str, Any]:
        response = self._session.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=30
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def _location_loaded(self) -> bool:
        try:
            data = self.graphql(WORKSPACE_QUERY)
        except (requests.RequestException, ValueError):
            return False
        workspace = data["workspaceOrError"]
        if workspace["__typename"] != "Workspace":
            return False
        return any(
            entry["name"] == LOCATION
            and (entry["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
            for entry in workspace["locationEntries"]
        )

    def runs(self, tags: Mapping[str, str] | None = None) -> list[Run]:
        flt: dict[str, Any] = {}
        if tags:
            flt["tags"] = [{"key": k, "value": v} for k, v in tags.items()]
        result = self.graphql(RUNS_QUERY, {"filter": flt, "limit": 1000})["runsOrError"]
        assert result["__typename"] == "Runs", result
        return [
            Run(
                run_id=item["runId"],
                job_name=item["jobName"],
                status=item["status"],
                creation_time=item["creationTime"],
                start_time=item["startTime"],
                end_time=item["endTime"],
                tags={tag["key"]: tag["value"] for tag in item["tags"]},
                run_config=item["runConfig"] or {},
            )
            for item in result["results"]
        ]

    def sensor_runs(self, *sensors: str) -> list[Run]:
        found: list[Run] = []
        for name in sensors:
            found += self.runs({SENSOR_NAME_TAG: name})
        return sorted(found, key=lambda run: run.creation_time)

    def run_messages(self, run_id: str) -> list[str]:
        """Every log message of a run (engine events, op logs), oldest first."""
        messages: list[str] = []
        cursor: str | None = None
        while True:
            result = self.graphql(LOGS_QUERY, {"runId": run_id, "cursor": cursor})["logsForRun"]
            assert result["__typename"] == "EventConnection", result
            messages += [event["message"] for event in result["events"] if "message" in event]
            cursor = result["cursor"]
            if not result["hasMore"]:
                return messages

    def sensor_status(self, sensor: str) -> str:
        selector = {
            "repositoryLocationName": LOCATION,
            "repositoryName": REPOSITORY,
            "sensorName": sensor,
        }
        result = self.graphql(SENSOR_QUERY, {"selector": selector})["sensorOrError"]
        assert result["__typename"] == "Sensor", result
        return str(result["sensorState"]["status"])


# What the `start_dagster_dev` fixture gives a test: start with these extra variables.
StartDagsterDev = Callable[[Mapping[str, str]], DagsterDev]


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, sig)
