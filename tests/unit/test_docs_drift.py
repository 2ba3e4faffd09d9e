"""The documents stay true to the code: every environment variable the code reads is in
docs/configuration.md and every one documented there is read; every `make` target and
`arbitrage` command the documents name exists; every relative link resolves.

What the code reads is found in its syntax trees (``os.environ``/``env`` lookups, the settings
helpers called with ``env``, ``*_ENV`` name constants), not in a list kept beside it."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbitrage.accounts import ES_API_KEY_ENV, ES_PASSWORD_ENV, ES_USERNAME_ENV
from arbitrage.cli.main import build_parser
from arbitrage.clients.kafka_security import PASSWORD_ENV, USERNAME_ENV

REPO = Path(__file__).resolve().parents[2]
CONFIGURATION = REPO / "docs" / "configuration.md"
# The code that runs for a user: the package, the Dagster layer, the local services, the demo
# and test drivers, the benchmarks and the sample generator.
CODE_ROOTS = ("arbitrage", "pipelines", "assets", "resources", "devservices", "scripts", "bench")
# The operating system's, read to find programs and modules, not settings of this project.
PLATFORM = frozenset({"PATH", "PYTHONPATH", "HOME"})
# Each job's own account: the shared variable's name + _<KEY> (arbitrage/accounts.py).
ACCOUNT_BASES = (USERNAME_ENV, PASSWORD_ENV, ES_USERNAME_ENV, ES_PASSWORD_ENV, ES_API_KEY_ENV)
VARIABLE = re.compile(r"[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+|[A-Z]{4,}")
DOCUMENTED_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]*(?:<KEY>)?)`", re.M)
ENV_OWNERS = ("env", "environ", "os.environ", "self.env", "environment")


def _literal(node: ast.AST) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value if VARIABLE.fullmatch(node.value) else None
    return None


def _is_env(node: ast.AST) -> bool:
    return ast.unparse(node) in ENV_OWNERS


def variables_read(tree: ast.AST) -> Iterator[str]:
    """The environment variables a module reads, by the shapes this code base reads them in."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            # FEES_FILE_ENV = "ARBITRAGE_FEES_FILE": a name kept for reading and for messages.
            named = any(isinstance(t, ast.Name) and t.id.endswith("_ENV") for t in node.targets)
            if named and (name := _literal(node.value)):
                yield name
        elif isinstance(node, ast.Call):
            func = node.func
            lookup = isinstance(func, ast.Attribute) and (
                (func.attr in ("get", "pop", "setdefault") and _is_env(func.value))
                or func.attr == "getenv"
            )
            # _text(env, "KEEPA_SOURCE", …), _int_env(env, "ES_PORT", …): a helper given env.
            helper = any(_is_env(arg) for arg in node.args)
            if lookup or helper:
                yield from filter(None, map(_literal, node.args))
        elif (
            isinstance(node, ast.Subscript)
            and isinstance(node.ctx, ast.Load)
            and _is_env(node.value)
            and (name := _literal(node.slice))
        ):
            yield name


# Dagster's YAML (``{env: NAME}``) and compose's interpolation (``${NAME}``) read the environment.
YAML_READS = re.compile(r"\{env: ([A-Z][A-Z0-9_]*)\}|\$\{([A-Z][A-Z0-9_]*)")
YAML_FILES = ("dagster.yaml", "workspace.yaml", "docker-compose.yml")


def read_by(roots: tuple[str, ...]) -> dict[str, str]:
    """Each variable read under ``roots`` (and by the YAML files) → the first file reading it."""
    found: dict[str, str] = {}
    for name in YAML_FILES:
        for match in YAML_READS.finditer((REPO / name).read_text()):
            found.setdefault(match.group(1) or match.group(2), name)
    for root in roots:
        for path in sorted((REPO / root).rglob("*.py")):
            for name in variables_read(ast.parse(path.read_text(), str(path))):
                found.setdefault(name, str(path.relative_to(REPO)))
    return found


def documented() -> list[str]:
    return DOCUMENTED_ROW.findall(CONFIGURATION.read_text())


def test_every_variable_the_code_reads_is_documented() -> None:
    missing = {
        name: where
        for name, where in read_by(CODE_ROOTS).items()
        if name not in PLATFORM and name not in documented()
    }
    assert not missing, f"read by the code but not a row of docs/configuration.md: {missing}"


def test_every_account_variable_is_documented() -> None:
    missing = [f"{base}_<KEY>" for base in ACCOUNT_BASES if f"{base}_<KEY>" not in documented()]
    assert not missing, f"docs/configuration.md has no row for {missing}"


def test_every_documented_variable_is_read() -> None:
    read = read_by((*CODE_ROOTS, "tests"))
    templates = {f"{base}_<KEY>" for base in ACCOUNT_BASES}
    unread = [name for name in documented() if name not in read and name not in templates]
    assert not unread, f"documented in docs/configuration.md but read nowhere: {unread}"


def test_each_variable_is_documented_once() -> None:
    names = documented()
    assert len(names) > 40, "docs/configuration.md lost its tables"
    twice = sorted({name for name in names if names.count(name) > 1})
    assert not twice, f"documented in more than one row: {twice}"


def test_the_scan_finds_each_way_the_code_reads() -> None:
    """The reader itself: each shape it knows, and what it must not count (a write)."""
    source = """
import os
KEY_ENV = "KEEPA_API_KEY"
a = os.environ.get("ONE_VAR")
b = os.environ["TWO_VAR"]
c = env.get("THREE_VAR", "")
d = _text(env, "FOUR_VAR", "x")
e = os.getenv("FIVE_VAR")
os.environ["WRITTEN_VAR"] = "1"
f = {"NOT_A_VAR": 1}
"""
    assert sorted(variables_read(ast.parse(source))) == [
        "FIVE_VAR",
        "FOUR_VAR",
        "KEEPA_API_KEY",
        "ONE_VAR",
        "THREE_VAR",
        "TWO_VAR",
    ]


# --- names and links in every document ---------------------------------------------------------


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def make_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([a-z][a-z0-9-]*):", text, re.M))


def test_every_make_target_named_in_the_documents_exists() -> None:
    targets = make_targets()
    named = {
        (path.name, target)
        for path in markdown_files()
        for target in re.findall(r"`(?:[A-Z_]+=\S+ )*make ([a-z][a-z0-9-]*)", path.read_text())
    }
    unknown = sorted((doc, target) for doc, target in named if target not in targets)
    assert not unknown, f"`make <target>` in the documents with no such target: {unknown}"


def _subcommands(parser: object) -> dict[str, object]:
    import argparse

    for action in getattr(parser, "_actions", []):
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_arbitrage_command_named_in_the_documents_exists() -> None:
    """`arbitrage <command> [<subcommand>]` in backticks: both words are known to the parser."""
    top = _subcommands(build_parser())
    unknown = []
    for path in markdown_files():
        for words in re.findall(r"`arbitrage ([a-z][a-z-]*)(?: ([a-z][a-z-]*))?", path.read_text()):
            command, sub = words
            if command not in top:
                unknown.append((path.name, command))
                continue
            subs = _subcommands(top[command])
            if sub and subs and sub not in subs:
                unknown.append((path.name, f"{command} {sub}"))
    assert not unknown, f"`arbitrage …` commands in the documents that do not exist: {unknown}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    headings = re.findall(r"^#{1,6} (.+)$", path.read_text(), re.M)
    return {_anchor(heading) for heading in headings}


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"^```.*?^```|`[^`\n]+`", re.M | re.S)


@pytest.mark.parametrize("document", markdown_files(), ids=lambda p: p.name)
def test_every_relative_link_resolves(document: Path) -> None:
    broken = []
    for target in LINK.findall(CODE.sub("", document.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        file_part, _, anchor = target.partition("#")
        linked = (document.parent / file_part).resolve() if file_part else document
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in _anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{document.name}: links that do not resolve: {broken}"
