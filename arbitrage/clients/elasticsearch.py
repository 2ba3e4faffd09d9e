"""The Elasticsearch client: idempotent bulk writes with retries, searches, index templates put
when ours changed (their content: arbitrage/clients/index_templates.py).

Plain Python (no Dagster); the Dagster layer hands it out through resources/elasticsearch.py."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import elastic_transport
from elasticsearch import ApiError, Elasticsearch

from arbitrage.clients.index_templates import (
    INDEX_TEMPLATES,
    INDEX_TEMPLATES_BODIES,
    TEMPLATE_FINGERPRINT,
    missing_properties,
    template_name,
)
from arbitrage.domain.redaction import redact_url, scrub_url

DEFAULT_URL = "http://127.0.0.1:9200"
SERVICES_HINT = (
    "start the local services with `make services-up` (or `docker compose up -d elasticsearch`)"
)

log = logging.getLogger(__name__)


class ElasticsearchUnavailableError(RuntimeError):
    """Elasticsearch did not answer or kept refusing writes; nothing was committed."""


@dataclass(frozen=True)
class BulkOp:
    """One write: ``create`` never overwrites; ``index`` + ``version`` is externally versioned."""

    action: str  # "index" | "create"
    index: str
    doc_id: str
    # The document, or its JSON already encoded (sent as is: a stage that also produces the
    # same JSON to Kafka serialises it once).
    source: dict[str, Any] | bytes
    version: int | None = None
    # "external": a strictly newer version wins (products: the pull time); "external_gte": an
    # equal one too (opportunity states: the writing run's start, several batches per run).
    version_type: str = "external"


@dataclass
class BulkOutcome:
    written: int = 0
    unchanged: int = 0  # version conflict: an equal or newer document is already there
    rejected: dict[int, str] = field(default_factory=dict)  # op position → reason (→ DLQ)
    retries: int = 0
    conflicts: list[int] = field(default_factory=list)  # op positions answered 409


_RETRYABLE = {429, 500, 502, 503, 504}
# Item errors that say the index or cluster cannot take writes right now (a read-only or
# flood-stage block, a deleted or closed index): never the document's fault, never the DLQ.
_CLUSTER_UNWELL_TYPES = {
    "cluster_block_exception",
    "index_not_found_exception",
    "index_closed_exception",
    "unavailable_shards_exception",
    "es_rejected_execution_exception",
}


def _cluster_unwell(status: int, error_type: str | None) -> bool:
    return status in _RETRYABLE or status in (403, 404) or error_type in _CLUSTER_UNWELL_TYPES


def elasticsearch_hosts(url: str) -> list[str]:
    """The node URLs in ELASTICSEARCH_URL: one, or several comma-separated (the nodes of a
    cluster: the client sends each request to one of them and another when one does not
    answer)."""
    return [part.strip() for part in url.split(",") if part.strip()]


class RequestRefusedError(RuntimeError):
    """Elasticsearch refused a whole bulk request as invalid (HTTP 400): some document in it."""


def _api_error_text(exc: ApiError) -> str:
    error = exc.body.get("error", {}) if isinstance(exc.body, dict) else {}
    if isinstance(error, dict):
        return f"HTTP {exc.meta.status} {error.get('type')}: {error.get('reason')}"
    return f"HTTP {exc.meta.status}: {exc.message}"


def _action_line(op: BulkOp) -> bytes:
    """The bulk action line, e.g. {"index":{"_index":"products","_id":"B0…","version":…}}.

    Written as text rather than serialised from a dict: this runs for every document, and the
    generic serialiser took over half of the time spent building a bulk request.
    """
    version = (
        ""
        if op.version is None
        else f',"version":{int(op.version)},"version_type":"{op.version_type}"'
    )

    return (
        f'{{{json.dumps(op.action)}:{{"_index":{json.dumps(op.index)},'
        f'"_id":{json.dumps(op.doc_id)}{version}}}}}'
    ).encode()


@dataclass
class ElasticsearchClient:
    """Connection to the Elasticsearch cluster holding the products and alerts indices."""

    # repr=False and every message through ``shown_url``: the URL may carry a password.
    url: str = field(default=DEFAULT_URL, repr=False)  # one node's base URL, or several, by commas
    api_key: str | None = field(default=None, repr=False)  # encoded; wins over user and password
    username: str = ""
    password: str | None = field(default=None, repr=False)
    ca_certs: str = ""  # PEM file of the CA to trust for https
    request_timeout_s: float = 30.0
    max_retries: int = 6  # attempts for bulk items answered 429/5xx
    backoff_base_s: float = 0.2  # first retry delay; doubles each time
    backoff_cap_s: float = 5.0
    _client: Elasticsearch | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def shown_url(self) -> str:
        """The URL as messages show it: credentials redacted."""
        return redact_url(self.url)

    def client_options(self) -> dict[str, Any]:
        """Authentication and trust for the client: an API key wins over user and password."""
        options: dict[str, Any] = {}
        api_key, password = self.api_key, self.password
        if api_key:
            options["api_key"] = api_key
        elif self.username:
            options["basic_auth"] = (self.username, password or "")
        if self.ca_certs:
            options["ca_certs"] = self.ca_certs
        return options

    def client(self) -> Elasticsearch:
        if self._client is None:
            hosts = elasticsearch_hosts(self.url)
            self._client = Elasticsearch(
                hosts,
                request_timeout=self.request_timeout_s,
                # With several nodes a request that timed out goes to another one (every write
                # is idempotent: document ids and versions); with one, to the same node again
                # would only make a failing run wait longer.
                retry_on_timeout=len(hosts) > 1,
                **self.client_options(),
            )
        return self._client

    def health(self, wait_s: int = 5) -> dict[str, Any]:
        """Cluster health (the integ-test build has no `GET /`); raises with a hint if down."""
        try:
            return dict(
                self.client().cluster.health(wait_for_status="yellow", timeout=f"{wait_s}s")
            )
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url} did not answer ({type(exc).__name__}); "
                f"{SERVICES_HINT}"
            ) from None

    def ensure_indices(self) -> dict[str, str]:
        """Put the index templates that changed, create the indices if missing, add the fields
        an existing index lacks. Every stage run calls this: when nothing changed it only
        reads (two requests), so six runs starting together queue no cluster-state updates."""
        self.health()
        es = self.client()
        current = {
            found["name"]: found["index_template"].get("_meta", {}).get(TEMPLATE_FINGERPRINT)
            for found in es.options(ignore_status=404)
            .indices.get_index_template(name=template_name("*"))
            .get("index_templates", [])
        }
        existing = es.options(ignore_status=404).indices.get_mapping(
            index=",".join(INDEX_TEMPLATES), ignore_unavailable=True
        )
        outcome = {}
        for index, template in INDEX_TEMPLATES_BODIES.items():
            fingerprint = template["_meta"][TEMPLATE_FINGERPRINT]
            if current.get(template_name(index)) != fingerprint:
                es.indices.put_index_template(name=template_name(index), **template)
            if index in existing:
                present = existing[index].get("mappings", {}).get("properties", {})
                missing = missing_properties(INDEX_TEMPLATES[index]["properties"], present)
                if missing:
                    es.indices.put_mapping(index=index, properties=missing)
                outcome[index] = "exists"
            else:
                es.options(ignore_status=400).indices.create(index=index)
                outcome[index] = "created"
        return outcome

    def count(self, index: str) -> int:
        es = self.client()
        es.indices.refresh(index=index)
        return int(es.count(index=index)["count"])

    def ensure_index(self, index: str, mappings: dict[str, Any]) -> None:
        """Create an index that has no template (a ledger, the registry) with its mapping on
        first use; one that exists already gains the fields a newer mapping added (fields are
        only ever added: Elasticsearch refuses to change one)."""
        client = self.client().options(ignore_status=400)
        answer = client.indices.create(index=index, mappings=mappings)
        error = answer.get("error") if isinstance(answer.body, dict) else None
        if error and error.get("type") == "resource_already_exists_exception":
            client.options(ignore_status=()).indices.put_mapping(
                index=index, properties=mappings["properties"]
            )

    def field_by_id(
        self, index: str, ids: Sequence[str], field: str, chunk: int = 5_000
    ) -> dict[str, Any]:
        """One field of each stored document of ``ids`` (those not found, or a missing index:
        absent), read in requests of ``chunk`` ids."""
        found = self.sources_by_id(index, ids, [field], chunk)
        return {doc_id: source[field] for doc_id, source in found.items() if field in source}

    def sources_by_id(
        self, index: str, ids: Sequence[str], fields: Sequence[str], chunk: int = 5_000
    ) -> dict[str, dict[str, Any]]:
        """The ``fields`` (source filtering: ``markets.*.new`` works) of each stored document of
        ``ids``, read in requests of ``chunk`` ids; those not found are absent."""
        found: dict[str, dict[str, Any]] = {}
        client = self.client().options(ignore_status=404)
        for start in range(0, len(ids), chunk):
            answer = client.mget(
                index=index, ids=list(ids[start : start + chunk]), source=list(fields)
            )
            for doc in answer.get("docs", []):
                if doc.get("found"):
                    found[doc["_id"]] = doc["_source"]
        return found

    def existing_ids(self, index: str, ids: Sequence[str]) -> set[str]:
        if not ids:
            return set()
        try:
            found = self.client().mget(index=index, ids=list(ids), source=False)
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url}: {scrub_url(str(exc), self.url)}"
            ) from None
        return {doc["_id"] for doc in found["docs"] if doc.get("found")}

    def search_sources(
        self,
        index: str,
        query: dict[str, Any],
        size: int,
        sort: Sequence[Any] = ("_doc",),
    ) -> list[dict[str, Any]]:
        """The sources of up to ``size`` documents matching ``query`` in ``sort`` order (after a
        refresh of the index when the caller needs the newest writes: ``refresh``)."""
        try:
            found = self.client().search(index=index, query=query, size=size, sort=list(sort))
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url}: {scrub_url(str(exc), self.url)}"
            ) from None
        return [hit["_source"] for hit in found["hits"]["hits"]]

    def count_matching(self, index: str, query: dict[str, Any]) -> int:
        """How many documents match ``query`` (as of the last refresh)."""
        try:
            return int(self.client().count(index=index, query=query)["count"])
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url}: {scrub_url(str(exc), self.url)}"
            ) from None

    def refresh(self, index: str) -> None:
        """Make every write so far visible to searches (get and mget never need it)."""
        try:
            self.client().indices.refresh(index=index)
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url}: {scrub_url(str(exc), self.url)}"
            ) from None

    def delivered_ids(self, index: str, ids: Sequence[str]) -> set[str]:
        """The ids whose delivery document says ``delivered`` (mget is realtime: a delivery
        recorded a moment ago by a run that then died is seen)."""
        if not ids:
            return set()
        try:
            found = self.client().mget(index=index, ids=list(ids), source_includes=["status"])
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url}: {scrub_url(str(exc), self.url)}"
            ) from None
        return {
            doc["_id"]
            for doc in found["docs"]
            if doc.get("found") and doc.get("_source", {}).get("status") == "delivered"
        }

    def bulk_write(
        self, ops: Sequence[BulkOp], sleep: Callable[[float], None] = time.sleep
    ) -> BulkOutcome:
        """Write all ops; report genuine per-document rejections per op (→ DLQ).

        Version conflicts count as ``unchanged``: an equal or newer document (or an alert with
        the same id) is already stored, which is exactly what an idempotent replay should find.
        Answers that mean the cluster is unwell, not the document (429, 5xx, a write block, a
        missing or closed index) are retried with capped backoff and then fail the run, so no
        offset moves. A request refused as a whole (HTTP 400) is split in halves until the
        offending document is isolated and rejected; the rest is written.
        """
        outcome = BulkOutcome()
        self._write_positions(ops, list(range(len(ops))), outcome, sleep)
        return outcome

    def _write_positions(
        self,
        ops: Sequence[BulkOp],
        positions: list[int],
        outcome: BulkOutcome,
        sleep: Callable[[float], None],
    ) -> None:
        pending = positions
        attempt = 0
        while pending:
            try:
                items = self._bulk_request(ops, pending)
            except RequestRefusedError as exc:
                if len(pending) == 1:
                    outcome.rejected[pending[0]] = (
                        f"Elasticsearch refused the document's write request ({exc})"
                    )
                    return
                half = len(pending) // 2
                self._write_positions(ops, pending[:half], outcome, sleep)
                self._write_positions(ops, pending[half:], outcome, sleep)
                return
            retry: list[int] = []
            last_problem = ""
            for position, item in zip(pending, items, strict=True):
                result = next(iter(item.values()))
                status = result["status"]
                error = result.get("error", {})
                if status < 300:
                    outcome.written += 1
                elif status == 409:
                    outcome.unchanged += 1
                    outcome.conflicts.append(position)
                elif _cluster_unwell(status, error.get("type")):
                    retry.append(position)
                    last_problem = f"HTTP {status} {error.get('type')}: {error.get('reason')}"
                else:
                    outcome.rejected[position] = (
                        f"Elasticsearch rejected the document (HTTP {status} {error.get('type')}: "
                        f"{error.get('reason')})"
                    )
            if not retry:
                return
            attempt += 1
            if attempt >= self.max_retries:
                raise ElasticsearchUnavailableError(
                    f"{len(retry)} bulk items were still refused after {attempt} attempts "
                    f"(last: {last_problem}); that is the cluster or index, not the data, so "
                    "offsets were not committed"
                )
            delay = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
            log.warning(
                "retrying %d bulk items in %.1fs (attempt %d; %s)",
                len(retry),
                delay,
                attempt,
                last_problem,
            )
            outcome.retries += len(retry)
            sleep(delay)
            pending = retry

    def _bulk_request(self, ops: Sequence[BulkOp], positions: list[int]) -> list[dict[str, Any]]:
        body: list[dict[str, Any] | bytes] = []
        for position in positions:
            op = ops[position]
            body.append(_action_line(op))
            body.append(op.source)
        try:
            response = self.client().bulk(
                operations=body,
                filter_path="errors,items.*.status,items.*.error.type,items.*.error.reason",
            )
        except (elastic_transport.ConnectionError, elastic_transport.ConnectionTimeout) as exc:
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url} did not answer a bulk request "
                f"({type(exc).__name__}); offsets were not committed. {SERVICES_HINT}"
            ) from None
        except ApiError as exc:
            if exc.meta.status == 400:
                raise RequestRefusedError(_api_error_text(exc)) from None
            raise ElasticsearchUnavailableError(
                f"Elasticsearch at {self.shown_url} refused a bulk request "
                f"({_api_error_text(exc)}); offsets were not committed"
            ) from None
        return list(response.get("items", []))
