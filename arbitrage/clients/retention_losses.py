"""Records retention deleted before a live group read them, kept until a person acknowledges
them: the lag check stays red meanwhile (docs/design.md, "Delivery").

One document per loss in the ``retention-losses`` index, its id the group, topic, partition and
the committed offset the loss starts at: a rerun that meets the same loss writes the same id
(``create``), so nothing is counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.domain.topics import RETENTION_LOSS_INDEX

LOSS_INDEX = RETENTION_LOSS_INDEX
_MAPPING: dict[str, Any] = {
    "dynamic": "strict",
    "properties": {
        "group": {"type": "keyword"},
        "topic": {"type": "keyword"},
        "partition": {"type": "integer"},
        "from_offset": {"type": "long"},
        "to_offset": {"type": "long"},
        "records": {"type": "long"},
        "detected_at": {"type": "date"},
        "run_id": {"type": "keyword"},
        "acknowledged_at": {"type": "date"},
    },
}


@dataclass(frozen=True)
class RetentionLoss:
    group: str
    topic: str
    partition: int
    from_offset: int  # the group's committed offset: the first record it never read
    to_offset: int  # the low watermark: where it goes on

    @property
    def records(self) -> int:
        return self.to_offset - self.from_offset

    @property
    def doc_id(self) -> str:
        return f"{self.group}:{self.topic}:{self.partition}:{self.from_offset}"


def _ensure_index(es: ElasticsearchClient) -> None:
    es.ensure_index(LOSS_INDEX, _MAPPING)


def record_losses(
    es: ElasticsearchClient, losses: list[RetentionLoss], run_id: str, now_iso: str
) -> None:
    _ensure_index(es)
    client = es.client()
    for loss in losses:
        document = {
            "group": loss.group,
            "topic": loss.topic,
            "partition": loss.partition,
            "from_offset": loss.from_offset,
            "to_offset": loss.to_offset,
            "records": loss.records,
            "detected_at": now_iso,
            "run_id": run_id,
        }
        client.options(ignore_status=409).create(
            index=LOSS_INDEX, id=loss.doc_id, document=document, refresh="wait_for"
        )


def open_losses(es: ElasticsearchClient, group: str, topic: str) -> list[dict[str, Any]]:
    """The group's losses on the topic that nobody has acknowledged yet, oldest first."""
    _ensure_index(es)
    found = es.client().search(
        index=LOSS_INDEX,
        size=1000,
        query={
            "bool": {
                "filter": [{"term": {"group": group}}, {"term": {"topic": topic}}],
                "must_not": [{"exists": {"field": "acknowledged_at"}}],
            }
        },
        sort=[{"detected_at": "asc"}],
    )
    return [hit["_source"] | {"id": hit["_id"]} for hit in found["hits"]["hits"]]


def acknowledge_losses(
    es: ElasticsearchClient, group: str, topic: str, now_iso: str
) -> list[dict[str, Any]]:
    """Mark every open loss of the group on the topic as seen; returns what was acknowledged."""
    losses = open_losses(es, group, topic)
    client = es.client()
    for loss in losses:
        client.update(
            index=LOSS_INDEX, id=loss["id"], doc={"acknowledged_at": now_iso}, refresh="wait_for"
        )
    return losses
