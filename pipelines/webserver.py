"""`python -m pipelines.webserver`: dagster-webserver with the guard (arbitrage/web/guard.py) in
front of its app, in its own process; it takes dagster-webserver's arguments unchanged.

The guard is put in front of whatever app uvicorn loads in this process: dagster-webserver
builds its app inside its CLI and hands it to uvicorn, and every uvicorn server goes through
``uvicorn.Config.load``. That method is replaced before the CLI runs, so no socket of this
process serves the webserver's app unguarded. If the hook is missing (a uvicorn release that
renamed it) the process refuses to start rather than serve unguarded;
tests/e2e/test_ui_guard.py fails if a request from another origin gets through.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import uvicorn

from arbitrage.web.guard import (
    ALLOWED_HOSTS_ENV,
    LOG,
    GuardConfigError,
    GuardPolicy,
    HostOriginGuard,
    allowed_hosts_from_env,
)


def guard_uvicorn(policy: GuardPolicy) -> None:
    """Wrap every app a uvicorn server of this process loads in the guard."""
    load = getattr(uvicorn.Config, "load", None)
    if not callable(load):
        raise SystemExit(
            "the UI guard cannot hook uvicorn (uvicorn.Config.load is gone): not serving the "
            "Dagster UI unguarded"
        )

    def guarded_load(config: Any) -> None:
        load(config)
        config.loaded_app = HostOriginGuard(config.loaded_app, policy)

    uvicorn.Config.load = guarded_load  # type: ignore[method-assign]


def main() -> None:
    # Its own handler: the root logger's level would change what the libraries log.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    LOG.addHandler(handler)
    LOG.setLevel(logging.INFO)
    LOG.propagate = False
    try:
        policy = GuardPolicy.with_names(allowed_hosts_from_env(os.environ), graphql=True)
    except GuardConfigError as exc:
        raise SystemExit(str(exc)) from None
    LOG.info(
        "guarding the Dagster UI: answers to %s (%s), refuses cross-origin changes",
        ", ".join(sorted(policy.names)),
        ALLOWED_HOSTS_ENV,
    )
    guard_uvicorn(policy)
    from dagster_webserver.cli import main as webserver_main

    sys.argv[0] = "dagster-webserver"  # its usage and error lines name the command people know
    webserver_main()


if __name__ == "__main__":
    main()
