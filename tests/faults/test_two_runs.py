"""Two runs of one partition at once: a CLI run launched while another run is live.

The first run is a real `dagster job execute` process that freezes itself (SIGSTOP, armed by
ARBITRAGE_FAULT_POINT) right after its first commit, in the middle of a partition; a second
run drains the topic meanwhile; then the first is thawed. Creating the
second run's transactional producer fenced the first, so the first cannot commit anything any
more: it stops with a sentence, and every record is on the output topic once.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.stage_specs import ENRICHMENT
from tests.faults.audit import audit_enrichment, stage_process
from tests.integration.kafka_io import produce
from tests.integration.test_stages import good_updates, run_job

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def wait_until_frozen(pid: int, timeout_s: float = 120.0) -> None:
    """Until the process with ``pid`` (the stage's step process, or its parent) is stopped."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            # Fields after the command name: state, ppid, pgrp.
            state, _, pgrp = stat.rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pid and state == "T":
                return
        time.sleep(0.05)
    raise AssertionError("the first run never reached its fault point")


def wait_for_first_commit(kafka: KafkaClient, timeout_s: float = 120.0) -> dict[int, int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        committed = kafka.committed_offsets(ENRICHMENT.live_group, topics.RAW_UPDATES)
        done = {p: c for p, c in committed.items() if c}
        if done:
            return done
        time.sleep(0.05)
    raise AssertionError("the first run committed nothing within the timeout")


@pytest.mark.usefixtures("clean_pipeline")
def test_a_second_run_of_a_partition_fences_the_first(
    kafka: KafkaClient, es: ElasticsearchClient
) -> None:
    updates = good_updates(6000)
    produce(kafka, topics.RAW_UPDATES, [(u["asin"], encode(u)) for u in updates])
    first = stage_process("enrichment", batch_size=50, fault_point="enrichment:after_commit:1:stop")
    try:
        wait_until_frozen(first.pid)
        os.killpg(first.pid, signal.SIGSTOP)  # the parent CLI process too
        committed = wait_for_first_commit(kafka)
        ends = {p: high for p, (_, high) in kafka.watermarks(topics.RAW_UPDATES).items()}
        assert any(c < ends[p] for p, c in committed.items()), "the first run was not mid-range"

        second = run_job(
            "enrichment", {"ops": {"enrichment_stage": {"config": {"batch_size": 500}}}}
        )
        assert second.success
    finally:
        os.killpg(first.pid, signal.SIGCONT)
    output, _ = first.communicate(timeout=120)
    # Thawed, the first run hits the fence at its next transactional step.
    assert first.returncode != 0, output[-3000:]
    assert "was taken over by a newer run of the same partition" in output, output[-3000:]

    audit = audit_enrichment(
        "enrichment: a second run while the first is live (frozen, then thawed)",
        kafka,
        es,
        [u["asin"] for u in updates],
    )
    audit.assert_exactly_once()
