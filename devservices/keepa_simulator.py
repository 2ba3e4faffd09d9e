"""The Keepa market simulator (devservices/keepa_sim/) as a local service: `KEEPA_SIM=1 make
services-up` starts it beside Kafka, Elasticsearch and PostgreSQL, and writes
``keepa-sim.env`` (KEEPA_SOURCE, KEEPA_API_URL, KEEPA_API_KEY) for the clients to pull from it.

Its key is generated once and kept in a 0600 file, like PostgreSQL's password; the simulator
process gets it through its environment, never its arguments.
"""

from __future__ import annotations

import json
import shlex
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from devservices.postgres import read_or_create_secret
from devservices.secure import private_write
from devservices.service import LaunchSpec, Service
from devservices.settings import REPO_ROOT, Settings

NAME = "keepa-sim"


def env_path(settings: Settings) -> Path:
    return settings.state_dir / f"{NAME}.env"


class KeepaSimulator(Service):
    name = NAME
    has_secure_mode = False  # plain HTTP on loopback, as a local test server

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.port = settings.keepa_sim_port

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.port}"

    def ports(self) -> list[tuple[int, str]]:
        return [(self.port, "KEEPA_SIM_PORT")]

    @property
    def main_log(self) -> Path:
        return self.console_log

    @property
    def api_key(self) -> str:
        return read_or_create_secret(self.home / "api-key")

    def prepare(self) -> LaunchSpec:
        s = self.settings
        argv = [
            sys.executable,
            "-m",
            "devservices.keepa_sim",
            "--host",
            s.host,
            "--port",
            str(self.port),
            "--seed",
            str(s.keepa_sim_seed),
            "--products",
            str(s.keepa_sim_products),
            "--factor",
            str(s.keepa_sim_factor),
            "--tokens-per-minute",
            str(s.keepa_sim_tokens_per_minute),
        ]
        env = {"KEEPA_API_KEY": self.api_key, "PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"}
        return LaunchSpec(argv, env, REPO_ROOT)

    def is_healthy(self) -> bool:
        query = urllib.parse.urlencode({"key": self.api_key})
        try:
            with urllib.request.urlopen(f"{self.address}/token?{query}", timeout=3) as resp:
                return "tokensLeft" in json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def after_ready(self) -> None:
        exports = {
            "KEEPA_SOURCE": "api",
            "KEEPA_API_URL": self.address,
            "KEEPA_API_KEY": self.api_key,
        }
        lines = ["# Written by `KEEPA_SIM=1 python -m devservices up`: pull from the simulator."]
        lines += [f"export {name}={shlex.quote(value)}" for name, value in exports.items()]
        private_write(env_path(self.settings), "\n".join(lines) + "\n")

    def status_hint(self) -> str | None:
        return f"`. {env_path(self.settings)}` to pull from it"
