"""What every managed service provides, plus the generic up/down/status logic."""

from __future__ import annotations

import abc
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from devservices.errors import DevServicesError
from devservices.process import (
    START_HEADER,
    PidFile,
    PidState,
    RunAs,
    ensure_ports_free,
    pid_alive,
    start_process,
    stop_process_group,
    tail,
)
from devservices.report import log
from devservices.settings import Settings

FAILURE_TAIL_LINES = 30
PROGRESS_EVERY_S = 5.0


@dataclass(frozen=True)
class LaunchSpec:
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    run_as: RunAs | None = None


@dataclass
class Started:
    service: Service
    pid: int
    started_at: float
    popen: subprocess.Popen[bytes] | None = field(default=None)
    started_wall: float = field(default_factory=time.time)

    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return pid_alive(self.pid)


class Service(abc.ABC):
    name: str
    # What `down` sends the process group first (SIGKILL follows after the timeout).
    stop_signal: signal.Signals = signal.SIGTERM
    # Whether ARBITRAGE_SECURE changes how it runs (PostgreSQL: no).
    has_secure_mode: bool = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / self.name
        self.pid_file = PidFile(self.home / f"{self.name}.pid")

    @property
    @abc.abstractmethod
    def address(self) -> str: ...

    @abc.abstractmethod
    def ports(self) -> list[tuple[int, str]]:
        """(port, env var that changes it) pairs that must be free before starting."""

    @property
    @abc.abstractmethod
    def main_log(self) -> Path: ...

    @property
    def console_log(self) -> Path:
        """stdout/stderr of the process: where JVM and launcher errors end up."""
        return self.home / "logs" / f"{self.name}.out"

    @abc.abstractmethod
    def prepare(self) -> LaunchSpec:
        """Fetch if needed, write config, format storage; returns how to start it."""

    @abc.abstractmethod
    def is_healthy(self) -> bool:
        """One quick readiness probe (a second or two at most)."""

    def after_ready(self) -> None:
        """Idempotent set-up that needs the running service (users, databases); runs on every
        `up` once it is healthy, also when it was already running."""
        return None

    @property
    def mode_file(self) -> Path:
        return self.home / "mode"

    def mode(self) -> str:
        return "secure" if self.settings.secure and self.has_secure_mode else "plain"

    def mode_problem(self) -> str | None:
        """Why the running process cannot serve this `up`: it was started in the other mode
        (ARBITRAGE_SECURE on or off), which only a restart changes."""
        try:
            running = self.mode_file.read_text().strip()
        except OSError:
            return None
        if running and running != self.mode():
            return (
                f"{self.name} is running in {running} mode but ARBITRAGE_SECURE asks for "
                f"{self.mode()}; stop it first (`python -m devservices down {self.name}`)"
            )
        return None

    def status_hint(self) -> str | None:
        """An extra line for `status` (how to connect), if the service has one."""
        return None

    def hint(self) -> str:
        return (
            f"see `python -m devservices logs {self.name}`; to start from scratch run "
            f"`python -m devservices down {self.name}` and delete {self.home}."
        )

    def failure_log_files(self) -> list[Path]:
        return [self.main_log, self.console_log]

    def failure_log(self, since: float = 0.0) -> str:
        """Tail of each log written since `since` (wall clock); the console log only from the
        last start header on, so output of earlier runs is not mistaken for this failure."""
        chunks = []
        for path in self.failure_log_files():
            try:
                if path.stat().st_mtime < since:
                    continue
            except OSError:
                continue
            lines = tail(path, 1000)
            starts = [i for i, line in enumerate(lines) if line.startswith(START_HEADER)]
            if starts:
                lines = lines[starts[-1] + 1 :]
            lines = lines[-FAILURE_TAIL_LINES:]
            if lines:
                chunks.append(f"--- last {len(lines)} lines of {path} ---\n" + "\n".join(lines))
        return "\n".join(chunks) or "(no log output)"

    def check_pid(self, *, cleanup: bool) -> tuple[PidState, int | None]:
        state, record = self.pid_file.state()
        if state is PidState.STALE and cleanup:
            pid = record.pid if record else None
            log.info(
                "%s: removing stale pid file %s (pid %s is not running or not ours)",
                self.name,
                self.pid_file.path,
                pid,
            )
            self.pid_file.remove()
            return PidState.ABSENT, None
        return state, record.pid if record else None


def start(service: Service) -> Started | None:
    """Start the service unless it already runs; None if it is already healthy."""
    state, pid = service.check_pid(cleanup=True)
    if state is PidState.RUNNING and pid is not None:
        problem = service.mode_problem()
        if problem is not None:
            raise DevServicesError(problem)
        if service.is_healthy():
            log.info(
                "%s already running and healthy at %s (pid %d)", service.name, service.address, pid
            )
            service.after_ready()
            return None
        log.info("%s already running (pid %d), not ready yet", service.name, pid)
        return Started(service, pid, time.monotonic())
    spec = service.prepare()
    log.debug("%s: running %s", service.name, " ".join(spec.argv))
    ensure_ports_free(service.name, service.settings.host, service.ports())
    popen = start_process(
        spec.argv,
        env=spec.env,
        cwd=spec.cwd,
        console_log=service.console_log,
        run_as=spec.run_as,
    )
    service.pid_file.write(popen.pid)
    service.mode_file.write_text(service.mode() + "\n")
    log.info("started %s (pid %d), logs in %s", service.name, popen.pid, service.main_log)
    return Started(service, popen.pid, time.monotonic(), popen)


def wait_ready(started: Started, timeout: float) -> None:
    service = started.service
    last_report = time.monotonic()
    while True:
        if not started.alive():
            service.pid_file.remove()
            raise DevServicesError(
                f"{service.name} exited during startup; {service.hint()}",
                details=service.failure_log(started.started_wall - 1),
            )
        if service.is_healthy():
            service.after_ready()
            log.info(
                "%s ready at %s (pid %d, %.1fs)",
                service.name,
                service.address,
                started.pid,
                time.monotonic() - started.started_at,
            )
            return
        elapsed = time.monotonic() - started.started_at
        if elapsed > timeout:
            raise DevServicesError(
                f"{service.name} not ready after {timeout:.0f}s (still running as pid "
                f"{started.pid}); raise DEVSERVICES_TIMEOUT or {service.hint()}",
                details=service.failure_log(started.started_wall - 1),
            )
        if time.monotonic() - last_report >= PROGRESS_EVERY_S:
            log.info("waiting for %s … %.0fs", service.name, elapsed)
            last_report = time.monotonic()
        time.sleep(0.5)


def up(services: list[Service], timeout: float) -> None:
    """Start everything first (they boot in parallel), then wait for each to be ready."""
    started: list[Started] = []
    errors: list[DevServicesError] = []
    for service in services:
        try:
            handle = start(service)
        except DevServicesError as exc:
            errors.append(exc)  # still start and wait for the others
            continue
        if handle is not None:
            started.append(handle)
    for handle in started:
        try:
            wait_ready(handle, timeout)
        except DevServicesError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise DevServicesError(
            "; ".join(e.message for e in errors),
            details="\n".join(e.details for e in errors if e.details),
        )


def down(service: Service, timeout: float = 30.0) -> None:
    state, pid = service.check_pid(cleanup=True)
    if state is PidState.ABSENT or pid is None:
        log.info("%s is not running", service.name)
        return
    log.info("stopping %s (pid %d)…", service.name, pid)
    started = time.monotonic()
    killed = stop_process_group(pid, timeout, service.stop_signal)
    service.pid_file.remove()
    how = "killed with SIGKILL after %.0fs" if killed else "stopped in %.1fs"
    log.info("%s " + how, service.name, time.monotonic() - started)


def health(service: Service) -> tuple[str, int | None]:
    """(healthy|starting|down|stale pid, pid) without changing anything on disk."""
    state, pid = service.check_pid(cleanup=False)
    if state is PidState.ABSENT:
        return "down", None
    if state is PidState.STALE:
        return "stale pid", pid
    return ("healthy" if service.is_healthy() else "starting"), pid
