"""The Dagster instance every local process uses: the repo's dagster.yaml written to DAGSTER_HOME,
and the environment its storage block reads.

`DAGSTER_STORAGE=postgres` (the default): run, event-log and schedule storage in the local
PostgreSQL (`python -m devservices up`); dagster.yaml names only environment variables, so no
password is ever written to a file there. `DAGSTER_STORAGE=sqlite`: the storage block is left
out and Dagster keeps its embedded SQLite files in DAGSTER_HOME.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from devservices.errors import DevServicesError
from devservices.postgres import Postgres, throwaway_database
from devservices.settings import REPO_ROOT, Settings

DAGSTER_YAML = REPO_ROOT / "dagster.yaml"
STORAGES = ("postgres", "sqlite")
# What dagster.yaml's storage block reads (docker-compose sets the same names).
POSTGRES_ENV = (
    "DAGSTER_POSTGRES_HOST",
    "DAGSTER_POSTGRES_PORT",
    "DAGSTER_POSTGRES_USER",
    "DAGSTER_POSTGRES_PASSWORD",
    "DAGSTER_POSTGRES_DB",
)


# Where workspace.yaml finds the code location's gRPC server (Dagster's documented default port).
GRPC_HOST = "127.0.0.1"
DEFAULT_GRPC_PORT = 4000


def workspace_env(env: Mapping[str, str]) -> dict[str, str]:
    """DAGSTER_GRPC_HOST/PORT as workspace.yaml reads them: `env`'s, or the local defaults; and
    the project directory on PYTHONPATH, where dagster.yaml's storage class and the rest of the
    Dagster layer are found (not installed, decision 45; `dagster-daemon` and `dagster` are
    console scripts, which do not put the working directory on the path)."""
    return {
        "DAGSTER_GRPC_HOST": env.get("DAGSTER_GRPC_HOST") or GRPC_HOST,
        "DAGSTER_GRPC_PORT": env.get("DAGSTER_GRPC_PORT") or str(DEFAULT_GRPC_PORT),
        **project_path(env),
    }


def project_path(env: Mapping[str, str]) -> dict[str, str]:
    """PYTHONPATH with the project directory first."""
    rest = env.get("PYTHONPATH", "")
    return {"PYTHONPATH": os.pathsep.join([str(REPO_ROOT), rest] if rest else [str(REPO_ROOT)])}


def storage_kind(env: Mapping[str, str]) -> str:
    kind = env.get("DAGSTER_STORAGE", "").strip() or "postgres"
    if kind not in STORAGES:
        raise DevServicesError(f"DAGSTER_STORAGE={kind!r}: use one of {', '.join(STORAGES)}.")
    return kind


def instance_config(env: Mapping[str, str]) -> dict[str, Any]:
    """dagster.yaml as a dict, without its storage block when DAGSTER_STORAGE=sqlite."""
    config: dict[str, Any] = yaml.safe_load(DAGSTER_YAML.read_text())
    if storage_kind(env) == "sqlite":
        config.pop("storage", None)
    return config


def postgres_env(env: Mapping[str, str]) -> dict[str, str]:
    """DAGSTER_POSTGRES_*: what `env` already sets, the local PostgreSQL for the rest."""
    given = {name: env[name] for name in POSTGRES_ENV if env.get(name)}
    if len(given) == len(POSTGRES_ENV):
        return given
    local = Postgres(Settings.from_env(env))
    defaults = {
        "DAGSTER_POSTGRES_HOST": local.settings.host,
        "DAGSTER_POSTGRES_PORT": str(local.settings.postgres_port),
        "DAGSTER_POSTGRES_USER": "dagster",
        "DAGSTER_POSTGRES_DB": "dagster",
    }
    if "DAGSTER_POSTGRES_PASSWORD" not in given:
        defaults["DAGSTER_POSTGRES_PASSWORD"] = local.dagster_password()
    return {**defaults, **given}


def write_instance(home: Path, env: Mapping[str, str]) -> dict[str, str]:
    """Write DAGSTER_HOME/dagster.yaml; returns the variables to add to the processes' env."""
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if storage_kind(env) == "sqlite":
        header = "# Written from the repo's dagster.yaml with DAGSTER_STORAGE=sqlite.\n"
        target.write_text(header + yaml.safe_dump(instance_config(env), sort_keys=False))
        return {"DAGSTER_STORAGE": "sqlite"}
    target.write_text(DAGSTER_YAML.read_text())  # verbatim: the comments say why
    return {"DAGSTER_STORAGE": "postgres", **postgres_env(env)}


@contextlib.contextmanager
def fresh_storage(env: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """Variables that give an instance storage of its own (tests, benchmarks): a throwaway
    PostgreSQL database, dropped afterwards; nothing for SQLite (DAGSTER_HOME is fresh)."""
    if storage_kind(env) == "sqlite":
        yield {}
        return
    with throwaway_database(Settings.from_env(env)) as name:
        yield {"DAGSTER_POSTGRES_DB": name}
