"""The code server forks run processes from a preloaded forkserver (pipelines/code_server.py).

That the demo's runs really are forkserver children is checked end to end by
tests/e2e/test_demo_stop.py (it waits for a child of the forkserver)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import sys
import threading

import pytest
from dagster._core.utils import FuturesAwareThreadPoolExecutor
from dagster._grpc.server import DagsterApiServer

from pipelines import code_server

# Imported by neither this module nor pipelines.code_server, so in a child only if the forkserver
# (a fresh interpreter, not a copy of this one) preloaded it.
PRELOADED = "arbitrage.domain.fee_model"


def report_modules_and_parent(queue: multiprocessing.Queue) -> None:
    queue.put((PRELOADED in sys.modules, os.getppid()))


@pytest.mark.parametrize(
    ("argv", "module"),
    [
        (["--module-name", "pipelines.definitions", "--port", "4000"], "pipelines.definitions"),
        (["-m", "x.defs"], "x.defs"),
        (["--module-name=x.defs"], "x.defs"),
        (["--python-file", "defs.py"], None),
    ],
)
def test_the_definitions_module_is_read_from_the_grpc_flags(
    argv: list[str], module: str | None
) -> None:
    assert code_server.definitions_module(argv) == module


def test_runs_start_from_a_forkserver_that_imported_the_code_first() -> None:
    context = code_server.preloaded_run_context([PRELOADED])
    queue = context.Queue()
    child = context.Process(target=report_modules_and_parent, args=(queue,))
    child.start()
    preloaded, parent = queue.get(timeout=60)
    child.join(timeout=60)
    assert child.exitcode == 0
    assert preloaded
    assert parent != os.getpid()  # the forkserver's child, not ours


def test_the_grpc_server_starts_its_runs_from_the_given_context(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(DagsterApiServer, "__init__", DagsterApiServer.__init__)  # restored after
    context = multiprocessing.get_context("forkserver")
    code_server.start_runs_from(context)
    with FuturesAwareThreadPoolExecutor(max_workers=1) as pool:
        server = DagsterApiServer(
            server_termination_event=threading.Event(),
            logger=logging.getLogger(__name__),
            server_threadpool_executor=pool,
        )
    assert server._mp_ctx is context  # the attribute Dagster starts runs from
