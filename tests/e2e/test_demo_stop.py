"""`make demo` stopped the ways people stop it leaves no process behind: not the code server,
webserver or daemon, and not the run workers the code server launched.

A demo sent SIGINT and then SIGTERM used to leave `dagster dev` with its webserver, daemon and
code server running, sensors on, consuming the topics of whatever ran next.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest

from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from devservices.dagster_instance import fresh_storage, postgres_env
from devservices.dagster_processes import (
    CODE_SERVER_MODULE,
    WEBSERVER_MODULE,
    free_port,
    url_answers,
)
from devservices.process import port_open
from tests.dagster.helpers import opportunity, produce_updates

# Each case starts the whole demo: make test-slow (CI runs it).
pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
# The code server forks each run from its multiprocessing forkserver (pipelines/code_server.py):
# a run worker is a child of the forkserver, with the same command line.
FORKSERVER = b"multiprocessing.forkserver"
# The code server's own command line (`python -m pipelines.code_server ...`), not its forkserver's.
CODE_SERVER_ARG = b"\0" + CODE_SERVER_MODULE.encode() + b"\0"
WEBSERVER_ARG = b"\0" + WEBSERVER_MODULE.encode() + b"\0"


def processes_of(home: Path) -> dict[int, bytes]:
    """Processes whose environment points at this DAGSTER_HOME (everything the demo started),
    with their command lines."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found[int(entry.name)] = (entry / "cmdline").read_bytes()
    return found


class Demo:
    """`make demo` (or scripts/demo.py) in a session of its own, as a terminal runs it: Ctrl-C
    reaches its whole foreground process group."""

    def __init__(
        self, home: Path, *, via_make: bool = False, extra: Mapping[str, str] | None = None
    ) -> None:
        self.home = home
        self.output = home.parent / "demo.out"
        self.port = free_port()
        self.grpc_port = free_port()
        self.web_port = free_port()  # the opportunities page, supervised beside Dagster
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PORT": str(self.port),
            "DAGSTER_GRPC_PORT": str(self.grpc_port),
            "ARBITRAGE_WEB_PORT": str(self.web_port),
            # Nothing scheduled fires while the test runs.
            "KEEPA_PULL_CRON": "0 0 1 1 *",
            "ARBITRAGE_DIGEST_CRON": "0 0 1 1 *",
            **(extra or {}),
        }
        argv = (
            ["make", "--no-print-directory", "demo"]
            if via_make
            else [sys.executable, str(REPO / "scripts" / "demo.py")]
        )
        with self.output.open("wb") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until(
        self, what: str, condition: Callable[[], bool], timeout_s: float = 180.0
    ) -> None:
        deadline = time.monotonic() + timeout_s
        while not condition():
            assert self.process.poll() is None, (
                f"the demo exited before {what}:\n{self.text()[-3000:]}"
            )
            assert time.monotonic() < deadline, f"no {what} within {timeout_s:.0f} s"
            time.sleep(0.2)

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def ctrl_c(self) -> None:
        """What a terminal does: SIGINT to the foreground process group (make and the demo)."""
        os.killpg(self.process.pid, signal.SIGINT)

    def assert_nothing_left(self, within_s: float = 15.0) -> None:
        self.process.wait(timeout=60)
        deadline = time.monotonic() + within_s
        while (left := processes_of(self.home)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not left, f"processes still running under {self.home}: {left}"
        assert not url_answers(self.url)
        assert not port_open("127.0.0.1", self.grpc_port)
        assert not port_open("127.0.0.1", self.web_port)


def three_processes(home: Path) -> bool:
    commands = processes_of(home).values()
    return all(
        any(name in command for command in commands)
        for name in (WEBSERVER_ARG, b"dagster-daemon", CODE_SERVER_ARG)
    )


def run_statuses(home: Path, storage: Mapping[str, str]) -> tuple[Counter[str], str]:
    """How the demo's runs ended, from its instance (the throwaway database it was given), and
    for each run that did not end SUCCESS or CANCELED its job and last messages."""
    env = {**postgres_env(os.environ), **storage} if storage else {}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            runs = instance.get_runs()
            why = [
                f"{run.job_name} {run.run_id} {run.status.value}: "
                + " | ".join(entry.message for entry in instance.all_logs(run.run_id)[-6:])
                for run in runs
                if run.status.value not in {"SUCCESS", "CANCELED"}
            ]
            return Counter(run.status.value for run in runs), "\n".join(why)


def parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # it has ended
        return None
    return int(stat.rpartition(")")[2].split()[1])  # after the name: state, then the parent


def run_worker_running(home: Path) -> bool:
    processes = processes_of(home)
    forkservers = {pid for pid, command in processes.items() if FORKSERVER in command}
    return any(parent_of(pid) in forkservers for pid in forkservers)


@pytest.mark.slow
def test_sigint_then_sigterm_while_starting_leaves_nothing_running(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "dagster_home")
    demo.wait_until("the three Dagster processes", lambda: three_processes(demo.home))
    demo.process.send_signal(signal.SIGINT)
    time.sleep(1.5)
    demo.process.send_signal(signal.SIGTERM)  # impatient: a second stop signal during cleanup
    demo.assert_nothing_left()


def test_a_killed_demo_takes_the_dagster_processes_with_it(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "dagster_home")
    demo.wait_until("the UI", lambda: url_answers(demo.url))
    demo.process.kill()  # SIGKILL: no cleanup code of the demo runs
    demo.assert_nothing_left(within_s=45.0)


@pytest.mark.parametrize(
    "stop",
    [
        "ctrl-c",
        pytest.param("ctrl-c twice", marks=pytest.mark.slow),
        pytest.param("sigterm", marks=pytest.mark.slow),
    ],
)
def test_make_demo_stopped_while_runs_are_working_leaves_nothing_running(
    tmp_path: Path, stop: str
) -> None:
    with fresh_storage(os.environ) as storage:  # its own runs only, dropped afterwards
        demo = Demo(tmp_path / "dagster_home", via_make=True, extra=storage)
        # The pull and then the sensors' stage runs: each in a run worker under the code server.
        demo.wait_until("a run worker", lambda: run_worker_running(demo.home), timeout_s=240.0)
        if stop == "sigterm":
            # To the group, as `kill -- -PGID` or a service manager does: the demo gets it twice
            # (GNU make passes its own on), which must count as one stop (docs/operations.md,
            # "Supervision and stopping").
            os.killpg(demo.process.pid, signal.SIGTERM)
        else:
            demo.ctrl_c()
            if stop == "ctrl-c twice":
                time.sleep(1.5)  # later than SAME_STOP_S: a second stop, not the first twice
                demo.ctrl_c()
        demo.assert_nothing_left()
        if stop != "ctrl-c twice":  # a second Ctrl-C skips ending the runs: stop at once
            # The runs in flight were terminated (batch committed, CANCELED), not interrupted.
            statuses, why = run_statuses(demo.home, storage)
            assert statuses and not statuses.keys() - {"SUCCESS", "CANCELED"}, (
                f"{statuses}\n{why}\n{demo.text()[-3000:]}"
            )


def demo_runs(home: Path, storage: Mapping[str, str]) -> int:
    if not (home / "dagster.yaml").exists():  # the demo has not written its instance yet
        return 0
    return sum(run_statuses(home, storage)[0].values())


def test_make_demo_stopped_before_the_ui_is_up_ends_the_runs_the_daemon_launched(
    tmp_path: Path, kafka: KafkaClient
) -> None:
    """Ctrl-C while the demo waits for the UI: the daemon may be launching runs already (lag
    from before the demo), and they must end as on any stop, not be killed mid-launch."""
    updates = [opportunity(f"B0STARTUP{n:03d}", at=datetime.now(UTC)) for n in range(9)]
    produce_updates(kafka, topics.RAW_UPDATES, updates, [n % 3 for n in range(9)])
    with fresh_storage(os.environ) as storage:
        demo = Demo(tmp_path / "dagster_home", extra=storage)
        demo.wait_until("a run", lambda: demo_runs(demo.home, storage) > 0, timeout_s=240.0)
        demo.ctrl_c()
        # Still in DagsterProcesses.start (waiting for the UI to load the code location).
        assert "== launching one Keepa pull" not in demo.text(), "started before the first run"
        demo.assert_nothing_left(within_s=60.0)
        statuses, why = run_statuses(demo.home, storage)
        assert not statuses.keys() - {"SUCCESS", "CANCELED"}, f"{statuses}\n{why}"


@pytest.mark.slow
def test_the_demo_says_when_a_process_died_and_came_back(tmp_path: Path) -> None:
    demo = Demo(tmp_path / "dagster_home")
    demo.wait_until("the UI", lambda: url_answers(demo.url))
    (code_server,) = [
        pid for pid, command in processes_of(demo.home).items() if CODE_SERVER_ARG in command
    ]
    os.kill(code_server, signal.SIGKILL)
    restarted = re.compile(
        r"^!! \d\d:\d\d:\d\d code server restarted \(pid (\d+), restart 1\)$", re.M
    )
    demo.wait_until("the restart line", lambda: bool(restarted.search(demo.text())), 60.0)
    assert re.search(
        rf"^!! \d\d:\d\d:\d\d code server \(pid {code_server}\) was killed by SIGKILL after "
        r"\d+s; restarting in 1s$",
        demo.text(),
        re.M,
    ), demo.text()
    match = restarted.search(demo.text())
    assert match is not None
    assert int(match.group(1)) in processes_of(demo.home)
    demo.process.send_signal(signal.SIGTERM)
    demo.assert_nothing_left()
