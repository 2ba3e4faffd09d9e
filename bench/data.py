"""Benchmark inputs from the sample generator, cached on disk between runs.

Generating, parsing and enriching a million Keepa products costs minutes of CPU and far more
memory than the benchmarks themselves, so inputs are built once, in chunks, and kept under
``bench/.cache`` (git-ignored; ``BENCH_CACHE_DIR`` moves it). Chunk k holds up to CHUNK products
generated with seed ``DEFAULT_SEED + k``: chunks are independent, so two worker processes build
them in parallel, and because the generator is prefix-stable (the first n products of a seed
are the same for any larger count) a chunk built for a larger N serves every smaller N.

Each chunk stores:
- ``raw``: (key, value) pairs exactly as the Keepa pull produces them to raw.keepa_updates
  (Keepa bodies → ``parse_product_response`` → ``merge_market_products`` → ``encode``);
- ``enriched``: the stage's result for each of them (``enrich(parse_raw_update(value))``).

The cache directory is named after a hash of the fee file and the chunking. Before a cache is
used, the first products of chunk 0 are built again and compared byte for byte with it, so a
change to the generator, parsing, schemas or enrichment that alters their output rebuilds the
cache, while a refactor that changes nothing keeps it.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from arbitrage.domain.enrichment import enrich
from arbitrage.domain.fee_config import load_fee_config
from arbitrage.domain.keepa_parsing import merge_market_products, parse_product_response
from arbitrage.domain.messages.codec import encode
from arbitrage.domain.messages.types import EnrichedProduct
from arbitrage.domain.messages.validation import parse_raw_update
from arbitrage.settings import Settings
from tools.sample_generator import DEFAULT_PULLED_AT, DEFAULT_SEED, iter_sample_batches

CHUNK = 25_000
DEFAULT_CACHE = Path(__file__).resolve().parent / ".cache"
CACHE_ENV = "BENCH_CACHE_DIR"

Message = tuple[bytes, bytes]


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE)


CHECK_PRODUCTS = 300
_checked: set[Path] = set()


def _fingerprint() -> str:
    digest = hashlib.sha256(f"chunk={CHUNK};seed={DEFAULT_SEED}".encode())
    digest.update(Settings.from_env().fees_file.read_bytes())
    return digest.hexdigest()[:12]


def _chunk_dir() -> Path:
    return cache_root() / f"inputs-{_fingerprint()}"


def _still_current(directory: Path) -> bool:
    """Whether today's code still turns the first products of chunk 0 into the cached bytes."""
    cached = _cached_count(directory, 0)
    if not cached:
        return True  # nothing cached yet: nothing stale
    count = min(CHECK_PRODUCTS, cached)
    raw, enriched = _generate(0, count)
    old_raw = _load(_chunk_path(directory, 0, cached, "raw"))[: len(raw)]
    old_enriched = _load(_chunk_path(directory, 0, cached, "enriched"))[: len(enriched)]
    return raw == old_raw and [encode(p) for p in enriched] == [encode(p) for p in old_enriched]


def _chunk_path(directory: Path, chunk: int, count: int, kind: str) -> Path:
    return directory / f"chunk{chunk:04d}-n{count}.{kind}.pkl"


def _cached_count(directory: Path, chunk: int) -> int:
    """Products in the largest complete cached file of this chunk (0 if none)."""
    counts = []
    for path in directory.glob(f"chunk{chunk:04d}-n*.enriched.pkl"):
        count = int(path.name.split("-n")[1].split(".")[0])
        if _chunk_path(directory, chunk, count, "raw").exists():
            counts.append(count)
    return max(counts, default=0)


def _dump(path: Path, value: Any) -> None:
    # Write then rename: an interrupted run never leaves a truncated chunk behind.
    partial = path.with_suffix(".partial")
    with partial.open("wb") as handle:
        pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
    partial.replace(path)


def _load(path: Path) -> Any:
    # Our own cache, written by _dump above; never a file from elsewhere.
    with path.open("rb") as handle:
        return pickle.load(handle)


def _generate(chunk: int, count: int) -> tuple[list[Message], list[EnrichedProduct]]:
    fees = load_fee_config(Settings.from_env().fees_file)
    raw: list[Message] = []
    enriched: list[EnrichedProduct] = []
    for bodies in iter_sample_batches(count, seed=DEFAULT_SEED + chunk):
        # The merge the Keepa pull does: every market's answer for a batch, then one raw
        # update per ASIN (iter_pull does the same through a KeepaSource).
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for market, body in bodies.items():
            for asin, product in parse_product_response(body, market):
                found.setdefault(asin, {})[market] = product
        for asin, per_market in found.items():
            update = merge_market_products(asin, per_market, DEFAULT_PULLED_AT, "sample")
            value = encode(update)
            raw.append((asin.encode(), value))
            enriched.append(enrich(parse_raw_update(value), fees))
    return raw, enriched


def build_chunk(directory: Path, chunk: int, count: int) -> tuple[int, float]:
    """Generate, parse and enrich ``count`` products of one chunk; returns (chunk, seconds)."""
    started = time.perf_counter()
    raw, enriched = _generate(chunk, count)
    _dump(_chunk_path(directory, chunk, count, "raw"), raw)
    _dump(_chunk_path(directory, chunk, count, "enriched"), enriched)
    for stale in directory.glob(f"chunk{chunk:04d}-n*.pkl"):
        if not stale.name.startswith(f"chunk{chunk:04d}-n{count}."):
            stale.unlink(missing_ok=True)
    return chunk, time.perf_counter() - started


def _plan(n: int) -> list[tuple[int, int]]:
    """(chunk, products wanted from it) covering the first n products."""
    return [(chunk, min(CHUNK, n - chunk * CHUNK)) for chunk in range((n + CHUNK - 1) // CHUNK)]


def ensure_inputs(n: int, log: Any = None, workers: int | None = None) -> Path:
    """Build whatever chunks the first n products still lack; returns the chunk directory."""
    directory = _chunk_dir()
    directory.mkdir(parents=True, exist_ok=True)
    if directory not in _checked:
        if not _still_current(directory):
            if log:
                log(f"the cached inputs in {directory} no longer match the code: rebuilding")
            for stale in directory.glob("chunk*"):
                stale.unlink()
        _checked.add(directory)
    missing = [(c, k) for c, k in _plan(n) if _cached_count(directory, c) < k]
    if not missing:
        return directory
    # A chunk is built whole when the run needs most of it, so the next larger N reuses it.
    todo = [(c, CHUNK if k > CHUNK // 10 else k) for c, k in missing]
    products = sum(k for _, k in todo)
    workers = workers or max(1, min(len(todo), os.cpu_count() or 1, 4))
    if log:
        log(
            f"building {products:,} sample products ({len(todo)} chunks, {workers} processes) "
            f"into {directory} — once; later runs read the cache"
        )
    started = time.perf_counter()
    if workers == 1 or len(todo) == 1:
        for chunk, count in todo:
            build_chunk(directory, chunk, count)
    else:
        # spawn, not fork: the parent may already hold Kafka client threads.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = [pool.submit(build_chunk, directory, c, k) for c, k in todo]
            for future in futures:
                future.result()
    if log:
        log(f"built {products:,} products in {time.perf_counter() - started:.0f} s")
    return directory


def iter_raw_chunks(n: int) -> Iterator[list[Message]]:
    """The first n raw-update messages, one cached chunk at a time (bounded memory)."""
    directory = ensure_inputs(n)
    for chunk, count in _plan(n):
        messages: list[Message] = _load(
            _chunk_path(directory, chunk, _cached_count(directory, chunk), "raw")
        )
        yield messages[:count]


def raw_messages(n: int) -> list[Message]:
    return [message for chunk in iter_raw_chunks(n) for message in chunk]


def iter_enriched_chunks(n: int) -> Iterator[list[EnrichedProduct]]:
    """The first n enriched products, one cached chunk at a time (bounded memory)."""
    directory = ensure_inputs(n)
    for chunk, count in _plan(n):
        products: list[EnrichedProduct] = _load(
            _chunk_path(directory, chunk, _cached_count(directory, chunk), "enriched")
        )
        yield products[:count]
