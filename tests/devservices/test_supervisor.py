"""devservices.supervisor with real processes (sleep, sh): restarts with backoff, and a stop that
leaves nothing behind."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from devservices.process import pid_alive
from devservices.supervisor import (
    Backoff,
    Exited,
    Program,
    Restarted,
    Supervisor,
    processes_marked,
)

FAST = Backoff(first_s=0.1, cap_s=0.4, reset_after_s=60.0)


def wait_for(condition: Callable[[], Any], timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := condition()):
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
    return value


@pytest.fixture
def supervise(tmp_path: Path) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []

    def make(*argvs: tuple[str, ...], backoff: Backoff = FAST) -> Supervisor:
        programs = [Program(f"p{i}", argv, tmp_path / f"p{i}.log") for i, argv in enumerate(argvs)]
        supervisor = Supervisor(programs, env=dict(os.environ), cwd=tmp_path, backoff=backoff)
        started.append(supervisor)
        supervisor.start()
        return supervisor

    yield make
    for supervisor in started:
        supervisor.stop(grace_s=2.0)


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(first_s=1.0, cap_s=30.0)
    assert [backoff.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_killed_program_is_restarted_and_reported(supervise: Callable[..., Supervisor]) -> None:
    supervisor = supervise(("sleep", "1000"))
    pid = supervisor.pid("p0")
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    restarted = wait_for(lambda: [e for e in supervisor.events if isinstance(e, Restarted)])[0]
    exited = supervisor.events[0]
    assert isinstance(exited, Exited)
    assert (exited.program, exited.pid, exited.returncode) == ("p0", pid, -signal.SIGKILL)
    assert exited.describe().startswith(f"p0 (pid {pid}) was killed by SIGKILL after ")
    assert exited.describe().endswith("; restarting in 0s")
    assert restarted.pid == supervisor.pid("p0") != pid
    assert restarted.describe() == f"p0 restarted (pid {restarted.pid}, restart 1)"
    assert "===== supervisor: starting" in (Path(supervisor.cwd) / "p0.log").read_text()


def test_a_program_that_keeps_dying_is_restarted_ever_later(
    supervise: Callable[..., Supervisor],
) -> None:
    supervisor = supervise(("sh", "-c", "exit 3"))
    wait_for(lambda: len([e for e in supervisor.events if isinstance(e, Exited)]) >= 4)
    exits = [e for e in supervisor.events if isinstance(e, Exited)][:4]
    assert [e.returncode for e in exits] == [3, 3, 3, 3]
    assert [e.restart_in_s for e in exits] == [0.1, 0.2, 0.4, 0.4]
    assert "exited with code 3" in exits[0].describe()


def test_stop_leaves_nothing_behind(supervise: Callable[..., Supervisor], tmp_path: Path) -> None:
    # A child that stays in the group, one that leaves it (setsid), and a leader that is killed
    # and restarted first, so its orphaned child lives on in the old group.
    script = "sleep 1001 & setsid sleep 1002 & exec sleep 1003"
    supervisor = supervise(("sh", "-c", script))
    first = supervisor.pid("p0")
    assert first is not None
    wait_for(lambda: len(processes_marked(supervisor.marker)) == 3)
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: [e for e in supervisor.events if isinstance(e, Restarted)])
    wait_for(lambda: len(processes_marked(supervisor.marker)) == 5)  # 2 orphans + 3 new
    survivors = processes_marked(supervisor.marker)
    supervisor.stop(grace_s=30.0)
    assert supervisor.returncode("p0") == -signal.SIGTERM  # no need for SIGKILL
    assert processes_marked(supervisor.marker) == []
    assert not any(pid_alive(pid) for pid in survivors)


def test_stop_kills_what_ignores_sigterm_after_the_grace(
    supervise: Callable[..., Supervisor],
) -> None:
    supervisor = supervise(("sh", "-c", "trap '' TERM; sleep 1000 & wait"))
    wait_for(lambda: len(processes_marked(supervisor.marker)) == 2)
    started = time.monotonic()
    supervisor.stop(grace_s=1.0)
    assert time.monotonic() - started >= 1.0  # the grace was given
    assert processes_marked(supervisor.marker) == []
    assert supervisor.returncode("p0") == -signal.SIGKILL


def test_a_supervisor_stopping_does_not_restart(supervise: Callable[..., Supervisor]) -> None:
    supervisor = supervise(("sleep", "1000"), ("sleep", "1000"))
    supervisor.stop(grace_s=2.0)
    time.sleep(0.5)
    assert supervisor.events == []
    assert not supervisor.alive("p0") and not supervisor.alive("p1")


def test_a_retired_program_is_stopped_and_not_restarted_while_the_others_run(
    supervise: Callable[..., Supervisor],
) -> None:
    supervisor = supervise(("sleep", "1000"), ("sleep", "1000"))
    retired, other = supervisor.pid("p0"), supervisor.pid("p1")
    assert retired is not None and other is not None
    supervisor.retire("p0", grace_s=5.0)
    assert not pid_alive(retired)
    time.sleep(1.0)  # several monitor polls and FAST's whole backoff: no restart came
    assert supervisor.pid("p0") is None
    assert not [e for e in supervisor.events if e.program == "p0"]
    assert supervisor.pid("p1") == other
