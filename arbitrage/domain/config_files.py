"""Reading the TOML settings files (fees, rules, notification channels, discovery, storage) the
one way: a missing file names the setting that points at another, a malformed one says where
TOML broke. Each loader then checks its own keys (``refuse_unknown_keys`` names the strays)."""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any


def read_toml(
    path: Path, what: str, setting: str, error: type[ValueError], hint: str = ""
) -> dict[str, Any]:
    """The file's table; ``error`` with a sentence naming ``what`` (e.g. "rules file") and the
    setting when the file is missing or is not TOML. ``hint`` follows the missing-file advice."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; set {setting} to a valid file{hint}") from None
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}") from None


def refuse_unknown_keys(
    raw: Mapping[str, Any],
    keys: Collection[str],
    where: str,
    error: type[ValueError],
    noun: str = "key(s)",
) -> None:
    """``error`` naming the keys of ``raw`` not among ``keys``, and the known ones."""
    unknown = sorted(set(raw) - set(keys))
    if unknown:
        raise error(
            f"{where}: unknown {noun} {', '.join(unknown)}; known: {', '.join(sorted(keys))}"
        )
