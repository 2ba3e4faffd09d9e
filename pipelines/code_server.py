"""The code location's gRPC server (`dagster api grpc`), with run processes forked from a
preloaded interpreter instead of started fresh.

Dagster's code server starts every run in a new interpreter (multiprocessing "spawn"), which
imports Dagster, its PostgreSQL storage and our definitions again: ~1.5 CPU-seconds per run
before its first record (measured), and a cold start launches six runs at once (two stages ×
three partitions) on two cores. Here the runs come from a multiprocessing "forkserver" that
imported all of that once when the server started: ~0.15 CPU-s per run. Everything else is
Dagster's server, unchanged, with the same flags:

    python -m pipelines.code_server --module-name pipelines.definitions --port 4000 ...

The forkserver is a separate single-threaded process (not the threaded gRPC server), so
forking it is safe; it holds the code the server loaded at start, as the server itself does.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.forkserver
import sys
from collections.abc import Sequence
from multiprocessing.context import BaseContext

logger = logging.getLogger(__name__)

# What a run process imports before its first record, besides the definitions module itself.
RUN_PRELOAD = (
    "dagster",
    "dagster._grpc.impl",
    "dagster._core.execution.api",
    "dagster_postgres",
    "confluent_kafka",
    "elasticsearch",
)


def definitions_module(argv: Sequence[str]) -> str | None:
    """The ``--module-name`` (or ``-m``) value of a `dagster api grpc` command line."""
    for index, arg in enumerate(argv):
        if arg in ("--module-name", "-m") and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--module-name="):
            return arg.partition("=")[2]
    return None


def preloaded_run_context(modules: Sequence[str]) -> BaseContext:
    """A forkserver context whose server has imported ``modules``; started now, so its imports
    overlap the gRPC server's own start instead of delaying the first run."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(modules))
    multiprocessing.forkserver.ensure_running()
    return context


def start_runs_from(context: BaseContext) -> None:
    """Make Dagster's gRPC server start run processes from ``context``.

    Dagster fixes the server's context to "spawn" in ``DagsterApiServer.__init__`` (as
    ``_mp_ctx``, used only to start runs, their event queue and termination event); this
    replaces it after construction. If a Dagster release renames it, the server keeps
    spawning (correct, only slower) and says so in its log.
    """
    from dagster._grpc.server import DagsterApiServer

    construct = DagsterApiServer.__init__

    def construct_then_fork_runs(self: DagsterApiServer, *args: object, **kwargs: object) -> None:
        construct(self, *args, **kwargs)  # type: ignore[arg-type]
        if isinstance(getattr(self, "_mp_ctx", None), BaseContext):
            self._mp_ctx = context
        else:
            logger.warning(
                "this Dagster release has no DagsterApiServer._mp_ctx: runs start in fresh "
                "interpreters (slower cold starts, same results)"
            )

    DagsterApiServer.__init__ = construct_then_fork_runs  # type: ignore[method-assign]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    module = definitions_module(args)
    preload = [*RUN_PRELOAD, *([module] if module else [])]
    start_runs_from(preloaded_run_context(preload))
    from dagster._cli.api import grpc_command

    grpc_command.main(args=args, prog_name="dagster api grpc")


if __name__ == "__main__":
    main()
