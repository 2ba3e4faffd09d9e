"""The scripted attack of issue 24 on Dagster as make demo runs it: through the webserver's
GraphQL API (what the launchpad sends), a run of each job is launched with a run config that
changes one connection, credential or settings-file field, most of them pointing at a listener
of the attacker's. Every run fails when its resources are set up, and the listener hears
nothing. (tests/integration/test_run_config_doors.py checks the same table in process; this
one checks the code server's real launch path: run worker, instance, event log.)"""

from __future__ import annotations

import time
from typing import Any

import pytest

from devservices.dagster_processes import LOCATION
from tests.e2e.dagster_api import REPOSITORY, StartDagster
from tests.integration.test_run_config_doors import (
    ATTACKS,
    LISTENER,
    SECRET,
    VARIABLES,
    Listener,
    current_resource,
    scaffold,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(300)]

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on PythonError { message }
  }
}
"""

ERRORS = """
query Errors($runId: ID!) {
  logsForRun(runId: $runId) {
    ... on EventConnection {
      events {
        __typename
        ... on ErrorEvent { error { message causes { message } } }
      }
    }
  }
}
"""


def errors_of(dagster: Any, run_id: str) -> str:
    """Every error the run's events carry, with their causes."""
    events = dagster.graphql(ERRORS, {"runId": run_id})["logsForRun"]["events"]
    text = ""
    for event in events:
        error = event.get("error")
        if error:
            text += error["message"] + "".join(cause["message"] for cause in error["causes"])
    return text


def test_every_override_launched_through_the_webserver_fails_and_reaches_nobody(
    start_dagster: StartDagster,
) -> None:
    dagster = start_dagster({"ARBITRAGE_AUTOMATION": "off", "KEEPA_API_KEY": SECRET})
    launched: dict[str, tuple[str, str]] = {}
    with Listener() as listener:
        for job, resource, field, attack in ATTACKS:
            changes = {
                name: value.replace(LISTENER, str(listener.port))
                if isinstance(value, str)
                else value
                for name, value in attack.items()
            }
            config: dict[str, Any] = {**scaffold(current_resource(resource)), **changes}
            params = {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "jobName": job,
                },
                "runConfigData": {"resources": {resource: {"config": config}}},
            }
            answer = dagster.graphql(LAUNCH, {"params": params})["launchRun"]
            assert answer["__typename"] == "LaunchRunSuccess", (resource, field, answer)
            launched[answer["run"]["runId"]] = (resource, field)

        deadline = time.monotonic() + 180
        while True:
            runs = {run.run_id: run for run in dagster.runs() if run.run_id in launched}
            if len(runs) == len(launched) and all(run.finished for run in runs.values()):
                break
            assert time.monotonic() < deadline, {r: run.status for r, run in runs.items()}
            time.sleep(1)
        # A moment for anything that did connect late to show up.
        time.sleep(2)
        assert listener.connections == 0
        assert listener.received == b""

    for run_id, (resource, field) in launched.items():
        assert runs[run_id].status == "FAILURE", (resource, field)
        messages = errors_of(dagster, run_id)
        assert f"{field} (env {VARIABLES[field]})" in messages, (resource, field, messages)
        assert "cannot be changed in run config" in messages
        assert SECRET not in messages
