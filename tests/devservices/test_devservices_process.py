"""PID files (incl. stale ones), port probes and log tails."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest

from devservices.errors import DevServicesError
from devservices.kafka import Kafka
from devservices.process import (
    PidFile,
    PidState,
    ensure_ports_free,
    pid_alive,
    port_in_use,
    proc_start_ticks,
    tail,
)
from devservices.service import health
from devservices.settings import Settings


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def settings(tmp_path: Path, port: int = 1) -> Settings:
    return Settings(
        cache_dir=tmp_path / "cache",
        state_dir=tmp_path / "state",
        kafka_port=port,
        kafka_controller_port=port,
        es_port=port,
        es_transport_port=port,
        timeout=5,
    )


def test_pid_file_absent(tmp_path: Path) -> None:
    assert PidFile(tmp_path / "x.pid").state() == (PidState.ABSENT, None)


def test_pid_file_running_for_live_process(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "x.pid")
    pid_file.write(os.getpid())
    state, record = pid_file.state()
    assert state is PidState.RUNNING
    assert record is not None and record.pid == os.getpid()
    assert record.start_ticks == proc_start_ticks(os.getpid())


def test_pid_file_stale_when_process_is_gone(tmp_path: Path) -> None:
    pid_file = PidFile(tmp_path / "x.pid")
    pid = dead_pid()
    assert not pid_alive(pid)
    pid_file.write(pid)
    assert pid_file.state()[0] is PidState.STALE


def test_pid_file_stale_when_pid_was_reused(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    # Our own (live) pid, but with a start time that is not ours: another program's pid file.
    path.write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1}))
    assert PidFile(path).state()[0] is PidState.STALE


@pytest.mark.parametrize("content", ["", "garbage", "{}", '{"pid": "x"}', "[1]"])
def test_pid_file_garbage_is_stale(tmp_path: Path, content: str) -> None:
    path = tmp_path / "x.pid"
    path.write_text(content)
    assert PidFile(path).state()[0] is PidState.STALE


def test_bare_pid_number_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "x.pid"
    path.write_text(f"{os.getpid()}\n")
    assert PidFile(path).state()[0] is PidState.RUNNING


def test_service_removes_stale_pid_file_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kafka = Kafka(settings(tmp_path))
    kafka.pid_file.write(dead_pid())
    assert health(kafka)[0] == "stale pid"  # status reports it but leaves it alone
    assert kafka.pid_file.path.exists()
    with caplog.at_level("INFO", logger="devservices"):
        assert kafka.check_pid(cleanup=True) == (PidState.ABSENT, None)
    assert not kafka.pid_file.path.exists()
    assert "removing stale pid file" in caplog.text


def test_health_down_without_pid_file(tmp_path: Path) -> None:
    assert health(Kafka(settings(tmp_path))) == ("down", None)


def test_port_in_use_detects_listener() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert port_in_use("127.0.0.1", port)
        with pytest.raises(DevServicesError) as excinfo:
            ensure_ports_free("kafka", "127.0.0.1", [(port, "KAFKA_PORT")])
    message = excinfo.value.message
    assert f"port {port}" in message
    assert "KAFKA_PORT" in message


def test_port_in_use_detects_bound_but_not_listening() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        assert port_in_use("127.0.0.1", holder.getsockname()[1])


def test_free_port_is_not_in_use() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert not port_in_use("127.0.0.1", port)
    ensure_ports_free("kafka", "127.0.0.1", [(port, "KAFKA_PORT")])


def test_tail(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("".join(f"line {i}\n" for i in range(10_000)))
    assert tail(log, 3) == ["line 9997", "line 9998", "line 9999"]
    assert tail(log, 0) == []
    assert tail(tmp_path / "missing.log", 5) == []
    short = tmp_path / "b.log"
    short.write_text("only\n")
    assert tail(short, 30) == ["only"]
