"""The end-to-end tests' view of Dagster: the shared process control
(devservices.dagster_processes: code server, webserver, daemon, supervised) plus GraphQL reads of
runs, their logs and sensors."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from devservices.dagster_processes import LOCATION, DagsterProcesses

REPOSITORY = "__repository__"  # Definitions(...) in a module: the repository is implicit
SENSOR_NAME_TAG = "dagster/sensor_name"
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}

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


class Dagster(DagsterProcesses):
    """The three processes plus the GraphQL reads the end-to-end tests make: runs, logs,
    sensors."""

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


# What the `start_dagster` fixture gives a test: start with these extra variables.
StartDagster = Callable[[Mapping[str, str]], Dagster]
