"""The dead-letter envelope: the original bytes (base64), where they came from, and why."""

from __future__ import annotations

import base64
import hashlib

from arbitrage.domain.messages.timestamps import utc_now_iso
from arbitrage.domain.messages.types import (
    DLQ_KEY_KEPT_BYTES,
    DLQ_SCHEMA_VERSION,
    DLQ_VALUE_KEPT_BYTES,
    DLQ_VALUE_WHOLE_MAX_BYTES,
    DlqEnvelope,
)


def dlq_key(key: bytes) -> bytes:
    """The dead letter's Kafka key: the original's, cut so that any key fits the DLQ topic."""
    return key[:DLQ_KEY_KEPT_BYTES]


def dlq_envelope(
    *,
    source_topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    stage: str,
    error: str,
    failed_at: str | None = None,
) -> DlqEnvelope:
    raw = value or b""
    value_truncated = len(raw) > DLQ_VALUE_WHOLE_MAX_BYTES
    kept = raw[:DLQ_VALUE_KEPT_BYTES] if value_truncated else raw
    return {
        "schema_version": DLQ_SCHEMA_VERSION,
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else dlq_key(key).decode("utf-8", errors="replace"),
        "key_truncated": key is not None and len(key) > DLQ_KEY_KEPT_BYTES,
        "value": base64.b64encode(kept).decode("ascii"),
        "value_bytes": len(raw),
        "value_sha256": hashlib.sha256(raw).hexdigest(),
        "value_truncated": value_truncated,
        "stage": stage,
        "error": error,
        "failed_at": failed_at or utc_now_iso(),
    }
