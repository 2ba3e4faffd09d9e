"""Which fields an existing index lacks (arbitrage.clients.index_templates.missing_properties)."""

from __future__ import annotations

from arbitrage.clients.index_templates import (
    INDEX_TEMPLATES,
    INDEX_TEMPLATES_BODIES,
    missing_properties,
)


def test_only_absent_fields_are_missing_and_changed_ones_are_left() -> None:
    wanted = {
        "a": {"type": "long"},
        "b": {"type": "keyword", "index": False, "doc_values": False},
        "obj": {"properties": {"x": {"type": "long"}, "y": {"type": "long"}}},
        "signals": {"type": "object", "enabled": False},
        "new": {"properties": {"z": {"type": "long"}}},
    }
    present = {
        "a": {"type": "long"},
        "b": {"type": "keyword"},  # indexed there: cannot be changed, left as it is
        "obj": {"properties": {"x": {"type": "long"}}},
        # Indexed field by field there: it stays so, but takes new fields unindexed from now
        # on instead of refusing them (the root's strict mapping would).
        "signals": {"properties": {"s": {"type": "integer"}}},
    }
    assert missing_properties(wanted, present) == {
        "obj": {"properties": {"y": {"type": "long"}}},
        "signals": {"type": "object", "dynamic": False},
        "new": {"properties": {"z": {"type": "long"}}},
    }
    assert missing_properties(wanted, wanted) == {}
    # Once so, nothing more to add.
    relaxed = {**present, "signals": {**present["signals"], "dynamic": "false"}}
    assert "signals" not in missing_properties(wanted, relaxed)


def test_each_template_carries_the_fingerprint_of_its_content() -> None:
    fingerprints = {
        body["_meta"]["arbitrage_fingerprint"] for body in INDEX_TEMPLATES_BODIES.values()
    }
    assert len(fingerprints) == len(INDEX_TEMPLATES)
    for index, body in INDEX_TEMPLATES_BODIES.items():
        assert body["index_patterns"] == [index]
        assert body["template"]["mappings"] is INDEX_TEMPLATES[index]
        assert "refresh_interval" not in body["template"]["settings"]
