"""The dead-letter envelope: the original bytes (base64), where they came from, and why."""

from __future__ import annotations

import base64

from pipelines.messages.timestamps import utc_now_iso
from pipelines.messages.types import DLQ_SCHEMA_VERSION, DlqEnvelope


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
    return {
        "schema_version": DLQ_SCHEMA_VERSION,
        "source_topic": source_topic,
        "partition": partition,
        "offset": offset,
        "key": None if key is None else key.decode("utf-8", errors="replace"),
        "value": base64.b64encode(raw).decode("ascii"),
        "value_bytes": len(raw),
        "stage": stage,
        "error": error,
        "failed_at": failed_at or utc_now_iso(),
    }
