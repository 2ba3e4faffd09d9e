"""PID files, port probes, starting/stopping process groups and tailing logs (Linux)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path

from devservices.errors import DevServicesError

START_HEADER = "===== devservices: starting"


class PidState(Enum):
    ABSENT = "absent"
    RUNNING = "running"
    STALE = "stale"


@dataclass(frozen=True)
class PidRecord:
    pid: int
    # Kernel start time of the process; guards against the pid being reused by another program.
    start_ticks: int | None


def proc_stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (index 0 = state)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may itself contain spaces or ')'.
    return raw[raw.rfind(")") + 2 :].split()


def proc_start_ticks(pid: int) -> int | None:
    fields = proc_stat_fields(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def pid_alive(pid: int) -> bool:
    """True if pid exists and is not a zombie."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else; the start-time check decides if it's ours
    fields = proc_stat_fields(pid)
    return not (fields and fields[0] in ("Z", "X"))


class PidFile:
    def __init__(self, path: Path) -> None:
        self.path = path

    def write(self, pid: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "pid": pid,
            "start_ticks": proc_start_ticks(pid),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record) + "\n")
        tmp.replace(self.path)

    def read(self) -> PidRecord | None:
        """None if there is no pid file; PidRecord(pid=-1) if it is unreadable garbage."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
            ticks = data.get("start_ticks")
            return PidRecord(int(data["pid"]), int(ticks) if ticks is not None else None)
        except (ValueError, KeyError, TypeError, AttributeError):
            # Accept a bare pid too (hand-written or from another tool).
            with contextlib.suppress(ValueError):
                return PidRecord(int(text.strip()), None)
            return PidRecord(-1, None)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    def state(self) -> tuple[PidState, PidRecord | None]:
        record = self.read()
        if record is None:
            return PidState.ABSENT, None
        if not pid_alive(record.pid):
            return PidState.STALE, record
        if record.start_ticks is not None and proc_start_ticks(record.pid) != record.start_ticks:
            return PidState.STALE, record  # pid reused by an unrelated process
        return PidState.RUNNING, record


def port_in_use(host: str, port: int) -> bool:
    """True if something listens on host:port or the port cannot be bound."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        if probe.connect_ex((host, port)) == 0:
            return True
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # Same option the JVM servers use, so TIME_WAIT leftovers don't count as "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout)
        return probe.connect_ex((host, port)) == 0


def ensure_ports_free(service: str, host: str, ports: Sequence[tuple[int, str]]) -> None:
    for port, env_var in ports:
        if port_in_use(host, port):
            raise DevServicesError(
                f"cannot start {service}: port {port} on {host} is already in use by another "
                f"process; stop that process or set {env_var} to a free port."
            )


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int


def start_process(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    console_log: Path,
    run_as: RunAs | None = None,
) -> subprocess.Popen[bytes]:
    """Start argv detached in its own session/process group, output appended to console_log."""
    console_log.parent.mkdir(parents=True, exist_ok=True)
    with console_log.open("ab") as out:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        out.write(f"\n{START_HEADER} at {stamp}: {' '.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,  # drop root's supplementary groups
            )
        except OSError as exc:
            raise DevServicesError(f"could not run {argv[0]}: {exc}; check the install.") from exc


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # We started it with start_new_session, so pid == pgid; only signal the group if that
    # still holds, never a group we did not create.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


def stop_process_group(
    pid: int, timeout: float = 30.0, sig: signal.Signals = signal.SIGTERM
) -> bool:
    """`sig` to the group, wait up to timeout, then SIGKILL it. True if SIGKILL was needed."""
    _signal_group(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap_if_our_child(pid)
        if not group_alive(pid) and not pid_alive(pid):
            return False
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + 5
    while time.monotonic() < end and group_alive(pid):
        time.sleep(0.1)
    return True


def _reap_if_our_child(pid: int) -> None:
    """A child of this process (a test that started a broker) stays a zombie, and its process
    group with it, until it is waited for."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def tail(path: Path, lines: int = 30) -> list[str]:
    """Last `lines` lines of a file without reading all of it; [] if missing."""
    if lines <= 0:
        return []
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            block = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                fh.seek(size)
                data = fh.read(step) + data
                block *= 2
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]
