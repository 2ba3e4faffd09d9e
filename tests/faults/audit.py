"""The fault suite's tools: launch a stage run as its own process (so it can die for real), and
audit every source offset afterwards.

The audit reads each topic as ``read_committed`` (what every consumer of the pipeline sees) and
accounts for each source record: processed (its output is on the output topic), or dead-lettered
(its envelope names its offset), never both, never twice. It prints one line per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain.stage_specs import ENRICHMENT, StageSpec
from tests.integration.kafka_io import ReadMessage, read_all

REPO = Path(__file__).resolve().parents[2]
# Every audit line of the session, printed in the terminal summary (tests/faults/conftest.py).
AUDIT_LINES: list[str] = []
DAGSTER = Path(sys.executable).parent / "dagster"


def stage_process(
    stage: str,
    *,
    batch_size: int,
    fault_point: str = "",
    dagster_home: Path | None = None,
    stage_config: dict[str, Any] | None = None,
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen[str]:
    """``dagster job execute`` of one stage, as an operator would run it from the CLI
    (``extra_env``: variables over this process's, e.g. another Elasticsearch's)."""
    op_config = {"batch_size": batch_size, **(stage_config or {})}
    config = {"ops": {f"{stage}_stage": {"config": op_config}}}
    config_file = Path(tempfile.mkdtemp(prefix="faults-")) / "run.json"
    config_file.write_text(json.dumps(config))
    env = {
        **os.environ,
        "ARBITRAGE_FAULT_POINT": fault_point,
        "KEEPA_SOURCE": "sample",
        "DAGSTER_HOME": str(dagster_home or config_file.parent),
        **(extra_env or {}),
    }
    argv = [str(DAGSTER), "job", "execute", "-m", "pipelines.definitions", "-j", stage]
    return subprocess.Popen(
        [*argv, "-c", str(config_file)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: signals reach the step's process too
    )


def run_stage_process(stage: str, *, batch_size: int, fault_point: str = "") -> tuple[int, str]:
    process = stage_process(stage, batch_size=batch_size, fault_point=fault_point)
    output, _ = process.communicate(timeout=240)
    return process.returncode, output


@dataclass
class Audit:
    """What happened to every source record of one case."""

    case: str
    spec: StageSpec
    source_records: int
    processed: int = 0
    dead_lettered: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: dict[str, int] = field(default_factory=dict)
    documents: int = 0
    expected_documents: int = 0
    committed: dict[int, tuple[int | None, int]] = field(default_factory=dict)

    @property
    def committed_at_end(self) -> bool:
        return all(c == high for c, high in self.committed.values() if high)

    def line(self) -> str:
        dups = ", ".join(f"{topic} {n}" for topic, n in self.duplicates.items())
        offsets = " ".join(f"{p}:{c}/{h}" for p, (c, h) in sorted(self.committed.items()))
        return (
            f"AUDIT {self.case}: source {self.source_records} → processed {self.processed}, "
            f"dead-lettered {self.dead_lettered}, lost {len(self.lost)}; duplicates {dups}; "
            f"ES {self.spec.index} {self.documents}/{self.expected_documents}; "
            f"committed/end {offsets}"
        )

    def assert_exactly_once(self) -> None:
        AUDIT_LINES.append(self.line())
        assert not self.lost, f"lost: {self.lost[:10]}"
        assert not any(self.duplicates.values()), self.duplicates
        assert self.processed + self.dead_lettered == self.source_records
        assert self.documents == self.expected_documents
        assert self.committed_at_end, self.committed


def keys_in(keys: set[str]) -> Callable[[ReadMessage], bool]:
    return lambda message: message.key in keys


def audit_stage(
    case: str,
    spec: StageSpec,
    kafka: KafkaClient,
    es: ElasticsearchClient,
    *,
    expected_outputs: dict[str, str],
    poison: Callable[[ReadMessage], bool],
    output_id: str,
) -> Audit:
    """Account for one stage's source topic.

    ``expected_outputs`` maps each output id (``output_id`` names the field of the output
    message that carries it: an ASIN for products, an alert id for alerts) to its key;
    ``poison`` says which source records must be dead-lettered (each exactly once).
    """
    source = read_all(kafka, spec.source_topic)
    outputs = [m.json()[output_id] for m in read_all(kafka, spec.output_topic)]
    letters = [m.json() for m in read_all(kafka, spec.dlq_topic)]
    lettered_at = Counter((e["partition"], e["offset"]) for e in letters)
    audit = Audit(case, spec, len(source))
    counted = Counter(outputs)
    audit.processed = len(set(counted) & set(expected_outputs))
    audit.dead_lettered = len(lettered_at)
    audit.lost = sorted(set(expected_outputs) - set(counted))
    audit.lost += sorted(
        f"{m.key}@{m.partition}:{m.offset}"
        for m in source
        if poison(m) and (m.partition, m.offset) not in lettered_at
    )
    audit.duplicates = {
        spec.output_topic: sum(n - 1 for n in counted.values()),
        spec.dlq_topic: sum(n - 1 for n in lettered_at.values()),
    }
    unexpected = set(counted) - set(expected_outputs)
    if unexpected:
        audit.lost.append(f"{len(unexpected)} unexpected outputs, e.g. {sorted(unexpected)[:3]}")
    if spec.output_topic.endswith("alerts"):
        # Alerts: many (or none) per source record; every source record is accounted for by
        # its offset being committed and the expected alerts being there exactly once.
        audit.processed = len(source) - audit.dead_lettered
    audit.documents = es.count(spec.index)
    audit.expected_documents = len(expected_outputs)
    audit.committed = {
        lag.partition: (lag.committed, lag.high_watermark)
        for lag in kafka.lag(spec.live_group, spec.source_topic)
    }
    return audit


def audit_enrichment(
    case: str,
    kafka: KafkaClient,
    es: ElasticsearchClient,
    asins: list[str],
    poison: Callable[[ReadMessage], bool] = lambda message: False,
) -> Audit:
    """``audit_stage`` for enrichment: each ASIN processed once, ``poison`` dead-lettered."""
    return audit_stage(
        case,
        ENRICHMENT,
        kafka,
        es,
        expected_outputs={asin: asin for asin in asins},
        poison=poison,
        output_id="asin",
    )
