"""Bytes on a topic ↔ JSON objects, with the size limit and sentence-form errors."""

from __future__ import annotations

from typing import Any

import orjson

from arbitrage.domain.messages.types import MAX_RECORD_BYTES, SchemaError


def decode_json_object(raw: bytes | None, kind: str) -> dict[str, Any]:
    """Bytes off a topic → a JSON object, with size and syntax checks."""
    if raw is None:
        raise SchemaError(
            f"the {kind} message has no value (a tombstone); producers must send JSON"
        )
    if len(raw) > MAX_RECORD_BYTES:
        raise SchemaError(
            f"the {kind} message is {len(raw)} bytes; the limit is {MAX_RECORD_BYTES} bytes, "
            "so it was not parsed"
        )
    try:
        # orjson reads UTF-8 only (never UTF-16/32) and is several times faster than json,
        # which matters: decoding is a large share of a stage's CPU.
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise SchemaError(f"the {kind} message is not UTF-8 text") from None
        raise SchemaError(
            f"the {kind} message is not valid JSON ({exc.msg} at character {exc.pos})"
        ) from None
    if not isinstance(obj, dict):
        raise SchemaError(
            f"the {kind} message must be a JSON object, but it is a {type(obj).__name__}"
        )
    return obj


def encode(message: dict[str, Any]) -> bytes:
    """Serialise compactly; keys keep insertion order, so equal messages are equal bytes."""
    return orjson.dumps(message)
