"""The bundled Keepa sample's file format: a gzip JSON document of /product answers per market.

The sample source (resources/keepa.py) answers pulls from it with the same parsing path as the
live API; tools/sample_generator.py writes it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any


def load_sample_document(path: str | Path) -> dict[str, Any]:
    with gzip.open(path, "rb") as handle:
        document = json.loads(handle.read())
    if not isinstance(document, dict) or not isinstance(document.get("markets"), dict):
        raise ValueError(f"{path} is not a Keepa sample file (no 'markets' object inside)")
    return document
