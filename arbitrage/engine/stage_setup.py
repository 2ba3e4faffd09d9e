"""What a stage run works with, as one value: the runner takes it and hands it to each
partition's processor (arbitrage/engine/processors.py), so neither repeats a dozen parameters."""

from __future__ import annotations

from dataclasses import dataclass

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.notify import Channels
from arbitrage.domain.fee_config import FeeConfig
from arbitrage.domain.rules_config import RulesConfig
from arbitrage.domain.stage_specs import StageSpec
from arbitrage.engine.faults import FaultInjector


@dataclass(frozen=True)
class StageSetup:
    spec: StageSpec
    es: ElasticsearchClient
    fees: FeeConfig
    # The stage's inputs beside the fee config, where the spec says it reads them
    # (``StageSpec.reads_rules``, ``StageSpec.delivers``).
    rules: RulesConfig | None = None
    channels: Channels | None = None
    # Records read, written and committed together; records per bulk request within a batch.
    batch_size: int = 5000
    write_chunk_size: int = 1000
    # Above this share of dead letters in a batch (of 100 or more), the run fails instead.
    max_reject_ratio: float = 0.5
    # A kill point armed for the fault suite (arbitrage/engine/faults.py); None otherwise.
    faults: FaultInjector | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {self.batch_size}")
        if self.write_chunk_size < 1:
            object.__setattr__(self, "write_chunk_size", 1)
