"""Installs are pinned: every dependency hash-checked from a lock file, in make and in Docker."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def pins(lock: str) -> dict[str, str]:
    text = (REPO / lock).read_text()
    found = dict(re.findall(r"^([A-Za-z0-9_.\-]+)==(\S+) \\$", text, re.M))
    # Each pinned requirement carries at least one hash, so pip's --require-hashes accepts it.
    entries = re.split(r"\n(?=[A-Za-z0-9_.\-]+==)", text)[1:]
    assert len(entries) == len(found)
    assert all("--hash=sha256:" in entry for entry in entries), lock
    return {name.lower().replace("_", "-"): version for name, version in found.items()}


def requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}


DAGSTER_LAYER = ("pipelines", "assets", "resources")


def test_every_dependency_is_pinned_with_hashes_and_the_locks_agree() -> None:
    runtime, dev = pins("requirements.lock"), pins("requirements-dev.lock")
    project = PYPROJECT["project"]
    extras = project["optional-dependencies"]
    assert requirement_names(project["dependencies"] + extras["postgres"]) <= set(runtime)
    assert requirement_names(extras["dev"]) <= set(dev)
    assert {name: dev[name] for name in runtime} == runtime  # one version of everything


def test_make_and_docker_install_from_the_locks() -> None:
    makefile = (REPO / "Makefile").read_text()
    assert "--require-hashes -r requirements-dev.lock" in makefile
    dockerfile = (REPO / "docker" / "Dockerfile").read_text()
    assert "--require-hashes -r requirements.lock" in dockerfile
    # Docker copies the one package the project installs and the Dagster layer it loads from
    # its working directory.
    assert PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"] == ["arbitrage*"]
    for top in ("arbitrage", *DAGSTER_LAYER):
        assert f"COPY {top} {top}" in dockerfile, top


def _pip_installs(text: str) -> list[str]:
    joined = text.replace("\\\n", " ")  # a command continued over lines is one
    return [re.sub(r"\s+", " ", match) for match in re.findall(r"pip install[^\n&]*", joined)]


def test_no_install_fetches_an_unpinned_package() -> None:
    """pip itself and the build backend included: no `--upgrade pip`, and the project is built
    by the hash-checked setuptools, not by one an isolated build would fetch."""
    bootstrap = pins("requirements-bootstrap.lock")
    assert {"pip", "setuptools", "wheel"} <= set(bootstrap)
    dev = pins("requirements-dev.lock")
    assert {name: dev[name] for name in bootstrap} == bootstrap
    for name in ("Makefile", "docker/Dockerfile"):
        installs = _pip_installs((REPO / name).read_text())
        assert any("requirements-bootstrap.lock" in line for line in installs), name
        for line in installs:
            from_lock = "--require-hashes" in line and " -r requirements" in line
            project = "--no-deps" in line and "--no-build-isolation" in line
            assert from_lock or project, f"{name}: {line}"
