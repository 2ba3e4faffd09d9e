"""The accounts of arbitrage/domain/access.py hold what their job needs and nothing wider, and each
job finds its own account in the environment (arbitrage/accounts.py)."""

from __future__ import annotations

import os

import pytest

from arbitrage.accounts import AccountError, elasticsearch_as, kafka_as
from arbitrage.domain import access, topics
from arbitrage.domain.stage_specs import STAGES
from arbitrage.engine.kafka_transactions import transactional_id
from arbitrage.settings import Settings

WIDE_KAFKA = {"ALL", "CREATE", "DELETE", "ALTER", "ALTER_CONFIGS"}


def by_key() -> dict[str, access.Account]:
    return {account.key: account for account in access.accounts()}


def allows(account: access.Account, kind: str, name: str, operation: str) -> bool:
    return any(
        grant.kind == kind
        and operation in grant.operations
        and (name.startswith(grant.name) if grant.prefixed else name == grant.name)
        for grant in account.kafka
    )


def test_a_stage_may_use_its_own_transactional_ids_only() -> None:
    accounts = by_key()
    for spec in STAGES:
        for group in spec.groups:
            txn_id = transactional_id(group, spec.source_topic, 2)
            for other in STAGES:
                allowed = allows(accounts[other.name], "transactional_id", txn_id, "WRITE")
                assert allowed == (other.name == spec.name), (txn_id, other.name)


def test_a_stage_reads_its_source_and_writes_its_outputs_only() -> None:
    accounts = by_key()
    for spec in STAGES:
        own = accounts[spec.name]
        writes = {t.name for t in topics.TOPICS if allows(own, "topic", t.name, "WRITE")}
        reads = {t.name for t in topics.TOPICS if allows(own, "topic", t.name, "READ")}
        assert writes == {spec.dlq_topic, *([spec.output_topic] if spec.output_topic else [])}
        assert reads == {spec.source_topic}
        assert all(allows(own, "group", group, "READ") for group in spec.groups)


def test_only_provisioning_creates_and_no_runtime_account_holds_a_wide_grant() -> None:
    for account in access.accounts():
        # The operator deletes its own tools' groups (`arbitrage-cli-tail`…), nothing else.
        operations = {
            op
            for grant in account.kafka
            for op in grant.operations
            if not (grant.kind == "group" and grant.name == topics.TOOL_PREFIX and op == "DELETE")
        }
        privileges = {p for grant in account.es_indices for p in grant.privileges}
        if account.key == access.PROVISION:
            assert operations & WIDE_KAFKA == {"CREATE", "ALTER_CONFIGS"}
            assert "manage_index_templates" in account.es_cluster
            assert not privileges & {"all", "manage", "delete_index", "write", "index"}
            continue
        assert not operations & WIDE_KAFKA, account.key
        assert "manage_index_templates" not in account.es_cluster, account.key
        assert "manage_own_api_key" not in account.es_cluster, account.key
        assert not privileges & {"all", "manage", "delete_index", "write"}, account.key


def test_each_local_namespace_is_granted_and_the_operator_owns_only_scratch_ones() -> None:
    local = {account.user: account for account in access.local_accounts()}
    enrichment = local["arbitrage-enrichment"]
    for namespace in access.LOCAL_NAMESPACES:
        source = (namespace + "." if namespace else "") + "raw.keepa_updates"
        assert allows(enrichment, "topic", source, "READ"), source
    operator = local[access.OPERATOR_USER]
    assert allows(operator, "topic", "test-gw3.raw.keepa_updates", "ALL")
    assert not allows(operator, "topic", "raw.keepa_updates", "ALL")
    assert not allows(operator, "topic", "raw.keepa_updates", "CREATE")


def test_a_job_finds_its_own_account_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only what this case sets: a suite run in secure mode has TLS files and accounts set.
    for name in list(os.environ):
        if name.startswith(("KAFKA_", "ELASTICSEARCH_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "arbitrage")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "shared-pw")
    monkeypatch.setenv("ELASTICSEARCH_USERNAME", "arbitrage")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD", "shared-es-pw")
    settings = Settings.from_env()
    kafka, es = settings.kafka(), settings.elasticsearch()
    # Unset: the shared account, the very same resource.
    assert kafka_as(kafka, "enrichment") is kafka
    assert elasticsearch_as(es, "enrichment") is es
    monkeypatch.setenv("KAFKA_SASL_USERNAME_ENRICHMENT", "arbitrage-enrichment")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD_ENRICHMENT", "own-pw")
    monkeypatch.setenv("ELASTICSEARCH_USERNAME_ENRICHMENT", "arbitrage-enrichment")
    monkeypatch.setenv("ELASTICSEARCH_PASSWORD_ENRICHMENT", "own-es-pw")
    own = kafka_as(kafka, "enrichment")
    assert own.client_config()["sasl.username"] == "arbitrage-enrichment"
    assert own.client_config()["sasl.password"] == "own-pw"
    # Never in the client's repr (log lines, errors).
    assert "own-pw" not in repr(own)
    assert own.bootstrap_servers == kafka.bootstrap_servers
    own_es = elasticsearch_as(es, "enrichment")
    assert own_es.client_options()["basic_auth"] == ("arbitrage-enrichment", "own-es-pw")
    # Another job is not affected.
    assert kafka_as(kafka, "arbitrage") is kafka
    monkeypatch.delenv("KAFKA_SASL_PASSWORD_ENRICHMENT")
    with pytest.raises(AccountError, match="KAFKA_SASL_PASSWORD_ENRICHMENT"):
        kafka_as(kafka, "enrichment")
