"""The layout as the wheel and the import contracts see it (decision 45): one installed package,
and that package runs with Dagster absent."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A Python that refuses to import dagster, then imports every room of the package and runs the
# CLI's help: what an operator's shell has when only the wheel's `arbitrage` is on the path.
WITHOUT_DAGSTER = """
import importlib, pkgutil, sys

class NoDagster:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0].startswith("dagster"):
            raise ImportError("dagster is blocked in this test")
        return None

sys.meta_path.insert(0, NoDagster())
import arbitrage
for module in pkgutil.walk_packages(arbitrage.__path__, "arbitrage."):
    importlib.import_module(module.name)
from arbitrage.cli.main import main
sys.argv = ["arbitrage", "--help"]
main()
"""


def test_the_package_and_its_cli_run_without_dagster() -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_DAGSTER],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "usage: arbitrage" in done.stdout


def test_the_wheel_installs_one_package_and_one_command() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    found = project["tool"]["setuptools"]["packages"]["find"]
    assert found["include"] == ["arbitrage*"]
    assert list(project["project"]["scripts"]) == ["arbitrage"]
    # Every top-level folder with Python code is the package, the Dagster layer, or dev tooling.
    dagster_layer = {"pipelines", "assets", "resources"}
    tooling = {"devservices", "tools", "bench", "scripts", "tests", "docker"}
    folders = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert folders <= {"arbitrage"} | dagster_layer | tooling, folders - dagster_layer - tooling
