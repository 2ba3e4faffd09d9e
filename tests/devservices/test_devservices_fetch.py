"""Cache detection, checksum verification, mvn error reporting, zip extraction."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest

from devservices import fetch, versions
from devservices.errors import DevServicesError


def test_verify_checksum(tmp_path: Path) -> None:
    blob = tmp_path / "a.zip"
    blob.write_bytes(b"hello")
    fetch.verify_checksum(blob, "sha512", hashlib.sha512(b"hello").hexdigest())
    with pytest.raises(DevServicesError, match=r"checksum mismatch for a\.zip"):
        fetch.verify_checksum(blob, "sha512", "0" * 128)


def no_mvn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any attempt to run mvn would fail loudly."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def test_cached_entries_do_not_call_mvn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_mvn(monkeypatch, tmp_path)
    kafka = tmp_path / f"kafka-{versions.KAFKA_VERSION}"
    (kafka / "libs").mkdir(parents=True)
    (kafka / fetch.MARKER).write_text("{}")
    es = tmp_path / f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"
    es.mkdir()
    (es / fetch.MARKER).write_text("{}")
    assert fetch.kafka_libs(tmp_path) == kafka / "libs"
    assert fetch.elasticsearch_dist(tmp_path).parent == es


def test_missing_mvn_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    no_mvn(monkeypatch, tmp_path)
    with pytest.raises(DevServicesError, match=r"`mvn` \(Apache Maven\) is not on PATH"):
        fetch.kafka_libs(tmp_path / "cache")
    assert not (tmp_path / "cache" / f"kafka-{versions.KAFKA_VERSION}").exists()


def test_failing_mvn_shows_its_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        "echo '[ERROR] Failed to execute goal: Could not transfer artifact' >&2\n"
        "exit 1\n"
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    with pytest.raises(DevServicesError) as excinfo:
        fetch.elasticsearch_dist(tmp_path / "cache")
    assert "mvn failed to fetch Elasticsearch" in excinfo.value.message
    assert "Maven Central" in excinfo.value.message
    assert "Could not transfer artifact" in excinfo.value.details


def test_kafka_pom_lists_pinned_artifacts() -> None:
    pom = fetch._kafka_pom()
    for coordinate in versions.KAFKA_ARTIFACTS:
        _group, artifact, version = coordinate.split(":")
        assert f"<artifactId>{artifact}</artifactId><version>{version}</version>" in pom
    assert "log4j-slf4j-impl" in pom  # slf4j 1.x binding: Kafka ships slf4j-api 1.7


def test_extract_zip_keeps_exec_bits(tmp_path: Path) -> None:
    archive = tmp_path / "d.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        script = zipfile.ZipInfo("dist/bin/run")
        script.external_attr = (stat.S_IFREG | 0o755) << 16
        zf.writestr(script, "#!/bin/sh\n")
        conf = zipfile.ZipInfo("dist/config/a.yml")
        conf.external_attr = (stat.S_IFREG | 0o640) << 16
        zf.writestr(conf, "a: 1\n")
    out = tmp_path / "out"
    out.mkdir()
    fetch._extract_zip(archive, out)
    assert os.access(out / "dist" / "bin" / "run", os.X_OK)
    assert stat.S_IMODE((out / "dist" / "config" / "a.yml").stat().st_mode) == 0o640


def test_extract_zip_rejects_path_traversal(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("../escape.txt", "x")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(DevServicesError, match="unsafe path"):
        fetch._extract_zip(archive, out)


def test_publish_writes_marker_last(tmp_path: Path) -> None:
    tmp = tmp_path / ".tmp-x"
    tmp.mkdir()
    entry = tmp_path / "x"
    fetch._publish(tmp, entry, {"v": 1})
    assert fetch.is_cached(entry)
    assert json.loads((entry / fetch.MARKER).read_text()) == {"v": 1}
