"""A small process supervisor: start programs, restart one that dies, stop them all (Linux).

Each program runs in a session of its own, so a stop reaches everything it started (a code
server's run workers included), and every process group it ever had is remembered, so the
children a dead incarnation left behind are stopped too. Anything that escaped its group
(a child calling setsid) still carries this supervisor's marker in its environment and is
killed last. Why our own and not supervisord or systemd: docs/decisions.md, 25.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

MARKER_ENV = "DEVSERVICES_SUPERVISOR"
_PR_SET_PDEATHSIG = 1
_SIG_DFL = 0
_RESET_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM)
# Loaded here, not in the child: between fork and exec only async-signal-safe work is wise.
_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)


@dataclass(frozen=True)
class Program:
    """One supervised command; its output (both streams) is appended to ``log_path``."""

    name: str
    argv: tuple[str, ...]
    log_path: Path


@dataclass(frozen=True)
class Backoff:
    """Delay before restart number n (1, 2, ...): first_s doubling up to cap_s. A process that
    stayed up reset_after_s counts as healthy: its next death restarts after first_s again."""

    first_s: float = 1.0
    cap_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, failures: int) -> float:
        return min(self.cap_s, self.first_s * 2 ** max(0, failures - 1))


@dataclass(frozen=True)
class Exited:
    """A supervised process died (it was not being stopped)."""

    program: str
    pid: int
    returncode: int
    uptime_s: float
    restart_in_s: float
    at: float = field(default_factory=time.time)

    @property
    def how(self) -> str:
        if self.returncode < 0:
            return f"was killed by {signal.Signals(-self.returncode).name}"
        return f"exited with code {self.returncode}"

    def describe(self) -> str:
        return (
            f"{self.program} (pid {self.pid}) {self.how} after {self.uptime_s:.0f}s; "
            f"restarting in {self.restart_in_s:.0f}s"
        )


@dataclass(frozen=True)
class Restarted:
    program: str
    pid: int
    attempt: int
    at: float = field(default_factory=time.time)

    def describe(self) -> str:
        return f"{self.program} restarted (pid {self.pid}, restart {self.attempt})"


Event = Exited | Restarted
DEFAULT_BACKOFF = Backoff()


@dataclass
class _Slot:
    program: Program
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths since it last stayed up reset_after_s
    restarts: int = 0
    restart_at: float | None = None
    retired: bool = False  # stopped for good by retire(): never restarted


class Supervisor:
    """Start ``programs``; a monitor thread restarts any that dies, after ``backoff``, and
    reports each death and restart to ``on_event`` (from the monitor thread)."""

    def __init__(
        self,
        programs: Sequence[Program],
        *,
        env: Mapping[str, str],
        cwd: Path,
        backoff: Backoff = DEFAULT_BACKOFF,
        on_event: Callable[[Event], None] = lambda _event: None,
        poll_s: float = 0.2,
    ) -> None:
        self.marker = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self.env = {**env, MARKER_ENV: self.marker}
        self.cwd = cwd
        self.backoff = backoff
        self.on_event = on_event
        self.poll_s = poll_s
        self.events: list[Event] = []
        self._slots = {program.name: _Slot(program) for program in programs}
        self._groups: set[int] = set()  # every process group started: pgid == leader's pid
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._monitor: threading.Thread | None = None

    def start(self, names: Sequence[str] | None = None) -> None:
        """Start the named programs (default: all) and, once, the monitor thread."""
        with self._lock:
            for name in names or list(self._slots):
                self._spawn(self._slots[name])
        if self._monitor is None:
            self._monitor = threading.Thread(target=self._watch, name="supervisor", daemon=True)
            self._monitor.start()

    def pid(self, name: str) -> int | None:
        process = self._slots[name].process
        return process.pid if process is not None and process.poll() is None else None

    def alive(self, name: str) -> bool:
        return self.pid(name) is not None

    def returncode(self, name: str) -> int | None:
        process = self._slots[name].process
        return None if process is None else process.poll()

    def started_here(self, pid: int) -> bool:
        """Whether pid runs in a process group this supervisor started (now or earlier)."""
        try:
            return os.getpgid(pid) in self._groups
        except ProcessLookupError:
            return False

    def retire(self, name: str, grace_s: float = 10.0) -> None:
        """Stop one program for good, before the others: SIGTERM to its group, SIGKILL after
        ``grace_s``; the monitor no longer restarts it."""
        with self._lock:
            slot = self._slots[name]
            slot.retired = True
            process = slot.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10.0)

    def stop(self, grace_s: float = 20.0) -> None:
        """SIGTERM to every group, SIGKILL after ``grace_s`` (at once on a SIGINT or SIGTERM
        arriving meanwhile: a second Ctrl-C), then the marker sweep. Idempotent."""
        hurry: list[int] = []
        with _stop_signals_noted(hurry):
            self._stopping.set()
            if self._monitor is not None and self._monitor is not threading.current_thread():
                self._monitor.join(timeout=5)
            self._signal_groups(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while self._any_left() and not hurry and time.monotonic() < deadline:
                self._reap()
                time.sleep(0.1)
            self._signal_groups(signal.SIGKILL)
            deadline = time.monotonic() + 10.0
            while (marked := processes_marked(self.marker)) and time.monotonic() < deadline:
                for pid in marked:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.05)
            self._reap(wait_s=10.0)

    # ------------------------------------------------------------------------------ internals

    def _spawn(self, slot: _Slot) -> None:
        program = slot.program
        program.log_path.parent.mkdir(parents=True, exist_ok=True)
        with program.log_path.open("ab") as log:
            stamp = datetime.now(UTC).isoformat(timespec="seconds")
            command = " ".join(program.argv)
            log.write(f"\n===== supervisor: starting at {stamp}: {command}\n".encode())
            log.flush()
            slot.process = subprocess.Popen(
                list(program.argv),
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_prepare_child,
            )
        slot.started_at = time.monotonic()
        slot.restart_at = None
        self._groups.add(slot.process.pid)

    def _watch(self) -> None:
        while not self._stopping.wait(self.poll_s):
            with self._lock:
                if self._stopping.is_set():
                    return
                for slot in self._slots.values():
                    self._check(slot)

    def _check(self, slot: _Slot) -> None:
        process = slot.process
        if process is None or slot.retired:
            return
        now = time.monotonic()
        if slot.restart_at is None:
            code = process.poll()
            if code is None:
                return
            uptime = now - slot.started_at
            slot.failures = 1 if uptime >= self.backoff.reset_after_s else slot.failures + 1
            delay = self.backoff.delay(slot.failures)
            slot.restart_at = now + delay
            self._emit(Exited(slot.program.name, process.pid, code, uptime, delay))
        elif now >= slot.restart_at:
            try:
                self._spawn(slot)
            except OSError:
                # Cannot even start (a log directory removed, no more pids): try again later;
                # letting this thread die would end supervision and, by PR_SET_PDEATHSIG, the
                # programs it restarted.
                slot.failures += 1
                slot.restart_at = now + self.backoff.delay(slot.failures)
                return
            slot.restarts += 1
            assert slot.process is not None
            self._emit(Restarted(slot.program.name, slot.process.pid, slot.restarts))

    def _emit(self, event: Event) -> None:
        self.events.append(event)
        with contextlib.suppress(Exception):  # a failing listener must not stop supervision
            self.on_event(event)

    def _signal_groups(self, sig: signal.Signals) -> None:
        for group in self._groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)

    def _any_left(self) -> bool:
        for group in self._groups:
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                continue
            return True
        return False

    def _reap(self, wait_s: float = 0.0) -> None:
        """Collect our dead children (a zombie keeps its group alive)."""
        for slot in self._slots.values():
            if slot.process is None:
                continue
            if wait_s:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    slot.process.wait(timeout=wait_s)
            else:
                slot.process.poll()


def _prepare_child() -> None:
    """In the child, before exec (libc calls only): stop signals back to their defaults, and
    SIGTERM when the thread that started it ends (the kernel's rule for PR_SET_PDEATHSIG), so a
    supervisor killed outright takes its programs along."""
    # An ignored signal stays ignored across exec. A shell without job control starts background
    # commands with SIGINT ignored, Dagster's CLI maps SIGTERM to SIGINT's handler (in-process
    # Dagster code then ignores SIGTERM too), and the children would ignore our stop.
    for sig in _RESET_SIGNALS:
        _LIBC.signal(sig, _SIG_DFL)
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def processes_marked(marker: str) -> list[int]:
    """Processes whose environment carries this supervisor's marker."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


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
