"""Key-leak sweep: the Keepa key, set to a distinctive value, is found nowhere a person or a
tool could read it after pulls that meet every kind of trouble.

Runs against a local Keepa (tests/keepa_server.py) answering 429, 5xx, a timeout, 401 and 402,
with a hostile ASIN file (an env file holding the key) and an attempted ``base_url`` override,
with Dagster's and Python's logging at DEBUG. One pull runs in Dagster's multiprocess executor
so the compute logs (the steps' captured stdout/stderr) exist; the others run in process. Then
the sweep reads every file of the Dagster instance (event log, run storage, compute logs), the
stored events, the test's stdout/stderr (child processes included) and log records, every
message of every pipeline topic, and every document the enrichment stage then indexed.
"""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from arbitrage.clients.elasticsearch import ElasticsearchClient
from arbitrage.clients.kafka import KafkaClient
from arbitrage.domain import topics
from arbitrage.settings import DATA_DIR, Settings
from pipelines.definitions import build_definitions
from tests.definitions import SAMPLE_DEFS
from tests.integration.kafka_io import read_all
from tests.keepa_server import (
    KeepaTestServer,
    payment_required,
    refused,
    server_error,
    slow,
    tokens_exhausted,
)
from tools.sample_generator import generate_sample

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("clean_pipeline")]

SECRET = "zq-LEAK-SWEEP-KEEPA-KEY-5c1e9a70"
DEBUG_LOGGING = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def keepa_pull_job() -> dg.JobDefinition:
    """The keepa_pull job as the environment configures it (reconstructable: the multiprocess
    executor loads it again in each step's process)."""
    return build_definitions(Settings.from_env()).resolve_job_def("keepa_pull")


@pytest.fixture
def hostile_asins(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """An env file chosen as the ASIN list (allowed: it is under data/), plus real ASINs."""
    bodies = generate_sample(4, seed=23)
    asins = list(dict.fromkeys(p["asin"] for body in bodies.values() for p in body["products"]))
    folder = DATA_DIR / f".test-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    path = folder / "looks-like.env"
    path.write_text(
        f"KEEPA_API_KEY={SECRET}\n" + "\n".join(asins) + f"\nexport KEEPA_API_KEY='{SECRET}'\n"
    )
    yield path, asins
    shutil.rmtree(folder)


def keepa_config(asins_file: Path, **extra: Any) -> dict[str, Any]:
    """The launchpad's view: the key by its variable's name, short timeouts for the test."""
    return {
        "resources": {
            "keepa": {
                "config": {
                    "api_key": {"env": "KEEPA_API_KEY"},
                    "asins_file": str(asins_file),
                    "timeout_s": 1.0,
                    "max_wait_s": 2.0,
                    **extra,
                }
            }
        },
        **DEBUG_LOGGING,
    }


def stored_text(instance: dg.DagsterInstance) -> str:
    """Every run's config and tags, and every stored event with its error, as text."""
    text = ""
    for run in instance.get_runs():
        text += json.dumps(run.run_config, default=str) + json.dumps(run.tags)
        for entry in instance.all_logs(run.run_id):
            text += str(entry.dagster_event) + str(entry.user_message)
            data = entry.dagster_event.event_specific_data if entry.dagster_event else None
            error = getattr(data, "error", None)
            if error is not None:
                text += error.to_string()
    return text


def files_holding(root: Path, needle: bytes) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and needle in path.read_bytes()]


def test_the_keepa_key_is_found_nowhere_after_pulls_that_meet_every_trouble(
    kafka: KafkaClient,
    es: ElasticsearchClient,
    hostile_asins: tuple[Path, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    asins_file, asins = hostile_asins
    caplog.set_level(logging.DEBUG)
    home = tmp_path / "dagster_home"
    home.mkdir()
    outcomes: dict[str, bool] = {}
    keys_sent: list[str] = []
    with (
        KeepaTestServer(bodies=generate_sample(4, seed=23)) as server,
        dg.instance_for_test(
            temp_dir=str(home),
            overrides={"python_logs": {"python_log_level": "DEBUG"}},
        ) as instance,
    ):
        monkeypatch.setenv("KEEPA_SOURCE", "api")
        monkeypatch.setenv("KEEPA_API_KEY", SECRET)
        monkeypatch.setenv("KEEPA_API_URL", server.url)
        monkeypatch.setenv("KEEPA_MARKETS", "DE,GB")

        # 1. Out of tokens, a 500 and a timeout, then answers: the pull recovers. Multiprocess,
        #    so the step's stdout/stderr are captured into compute logs.
        server.script([tokens_exhausted(refill_in_ms=200), server_error(500), slow(2.5)])
        recovered = dg.execute_job(
            dg.reconstructable(keepa_pull_job),
            instance=instance,
            run_config=keepa_config(asins_file),
        )
        outcomes["429, 500, timeout, then answers"] = recovered.success
        assert {a for r in server.requests if r.status == 200 for a in r.asins} == set(asins)
        keys_sent += [r.params["key"] for r in server.requests]
        server.clear()

        # 2. Refusals that end the pull: 401, 402, and tokens that refill too late.
        job = keepa_pull_job()
        for name, answer in (
            ("401", refused(401, "invalid key")),
            ("402", payment_required()),
            ("429 past max_wait_s", tokens_exhausted(refill_in_ms=60_000)),
        ):
            server.script([answer])
            result = job.execute_in_process(
                run_config=keepa_config(asins_file),
                instance=instance,
                raise_on_error=False,
            )
            outcomes[name] = result.success
            keys_sent += [r.params["key"] for r in server.requests]
            server.clear()

        # 3. A run config that would send the key elsewhere: refused before any request.
        redirected = job.execute_in_process(
            run_config=keepa_config(asins_file, base_url="https://collector.example"),
            instance=instance,
            raise_on_error=False,
        )
        outcomes["base_url override"] = redirected.success
        assert server.requests == []
        stored = stored_text(instance)

    assert outcomes == {
        "429, 500, timeout, then answers": True,
        "401": False,
        "402": False,
        "429 past max_wait_s": False,
        "base_url override": False,
    }
    # The key really was used (so its absence below means something) ...
    assert len(keys_sent) >= 7 and set(keys_sent) == {SECRET}
    # ... the troubles were reported, in words that do not include it ...
    assert "base_url cannot be changed in run config" in stored
    assert "line 1: 'KEEP'…" in stored
    compute_logs = [p for p in home.rglob("*") if p.suffix in (".out", ".err", ".complete")]
    assert compute_logs, f"no compute logs under {home}"

    # ... and the enrichment stage carries what was pulled into Elasticsearch.
    assert (
        SAMPLE_DEFS.resolve_job_def("enrichment")
        .execute_in_process(instance=dg.DagsterInstance.ephemeral())
        .success
    )
    searched = ",".join((topics.PRODUCTS_INDEX, topics.ALERTS_INDEX))
    es.client().indices.refresh(index=searched)  # the stage's writes, searchable now
    documents = es.client().search(index=searched, size=1000)
    assert documents["hits"]["hits"], "nothing reached Elasticsearch: the sweep would be empty"
    messages = [m for spec in topics.TOPICS for m in read_all(kafka, spec.name)]
    assert messages

    out, err = capfd.readouterr()
    assert files_holding(home, SECRET.encode()) == []
    assert SECRET not in stored
    assert SECRET not in out + err
    assert SECRET not in caplog.text
    assert not [m for m in messages if SECRET.encode() in (m.value or b"") + (m.key or "").encode()]
    assert SECRET not in json.dumps(documents.body)
