"""Cache detection, pinned SHA-256 of every fetched file, mvn error reporting, zip extraction."""

from __future__ import annotations

import json
import os
import shutil
import stat
import zipfile
from pathlib import Path

import pytest

from devservices import fetch, versions
from devservices.__main__ import main as devservices_main
from devservices.errors import DevServicesError
from devservices.settings import Settings


def no_mvn(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Any attempt to run mvn would fail loudly."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-path"))


def _link(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system
        shutil.copy2(src, dst)


@pytest.fixture(scope="module")
def shared_cache() -> Path:
    """The machine's download cache (fetched and checked once here if it is not yet)."""
    cache_dir = Settings.from_env().cache_dir
    fetch.kafka_libs(cache_dir)
    fetch.elasticsearch_dist(cache_dir)
    return cache_dir


@pytest.fixture
def cache_copy(shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the cache in ARBITRAGE_CACHE_DIR: hard links, so a test replaces a file
    (`_tamper`) rather than writing into one, which would change the shared cache too."""
    copy = tmp_path / "cache"
    for name in (fetch.kafka_entry_name(), fetch.elasticsearch_entry_name()):
        shutil.copytree(shared_cache / name, copy / name, symlinks=True, copy_function=_link)
    monkeypatch.setenv("ARBITRAGE_CACHE_DIR", str(copy))
    no_mvn(monkeypatch, tmp_path)
    return copy


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.unlink()  # a new inode: the shared cache keeps its own
    path.write_bytes(bytes(data))


def _refusal(capsys: pytest.CaptureFixture[str]) -> str:
    assert devservices_main(["pins"]) == 1
    return capsys.readouterr().err


def test_pins_cover_every_artifact() -> None:
    pins = fetch.load_pins()
    kafka = f"{fetch.kafka_entry_name()}/libs/"
    for coordinate in versions.KAFKA_ARTIFACTS:
        _group, artifact, version = coordinate.split(":")
        assert f"{kafka}{artifact}-{version}.jar" in pins
    # Transitive dependencies too, the ones carrying native libraries among them.
    for stem in ("zstd-jni-", "snappy-java-", "lz4-java-", "scala-library-"):
        assert any(name.startswith(kafka + stem) for name in pins), stem
    assert versions.ELASTICSEARCH_ZIP_NAME in pins
    es = f"{fetch.elasticsearch_entry_name()}/elasticsearch-{versions.ELASTICSEARCH_VERSION}/"
    assert f"{es}bin/elasticsearch" in pins
    assert any(name.startswith(f"{es}lib/platform/") for name in pins)  # native libraries


def test_cached_entries_are_checked_not_refetched(
    cache_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert devservices_main(["pins"]) == 0  # no mvn on PATH: checked, not fetched again
    out = capsys.readouterr().out
    assert f"every file matches its pin: {cache_copy / fetch.kafka_entry_name() / 'libs'}" in out
    assert str(cache_copy / fetch.elasticsearch_entry_name()) in out


def test_a_tampered_jar_is_refused(cache_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    libs = cache_copy / fetch.kafka_entry_name() / "libs"
    (jar,) = libs.glob("zstd-jni-*.jar")  # a jar with native libraries inside
    _tamper(jar)
    with pytest.raises(DevServicesError, match=rf"refused kafka-.*/libs/{jar.name}: its SHA-256"):
        fetch.kafka_libs(cache_copy)
    error = _refusal(capsys)
    assert f"refused {fetch.kafka_entry_name()}/libs/{jar.name}" in error
    assert f"delete {cache_copy / fetch.kafka_entry_name()}" in error


def test_an_unpinned_jar_on_the_classpath_is_refused(
    cache_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    libs = cache_copy / fetch.kafka_entry_name() / "libs"
    shutil.copy(next(libs.glob("kafka-clients-*.jar")), libs / "zz-extra.jar")
    error = _refusal(capsys)
    assert f"refused {fetch.kafka_entry_name()}/libs/zz-extra.jar: it has no pin" in error


def test_a_missing_or_linked_jar_is_refused(cache_copy: Path) -> None:
    libs = cache_copy / fetch.kafka_entry_name() / "libs"
    jar = next(libs.glob("kafka-clients-*.jar"))
    jar.unlink()
    with pytest.raises(
        DevServicesError, match=rf"1 pinned file\(s\) missing, the first .*{jar.name}"
    ):
        fetch.kafka_libs(cache_copy)
    jar.symlink_to(cache_copy / "elsewhere.jar")
    with pytest.raises(DevServicesError, match="not a regular file"):
        fetch.kafka_libs(cache_copy)


def test_a_tampered_or_added_elasticsearch_file_is_refused(
    cache_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dist = fetch.elasticsearch_dist(cache_copy)
    native = next(path for path in sorted((dist / "lib" / "platform").rglob("*")) if path.is_file())
    original = native.read_bytes()
    _tamper(native)
    assert f"refused {native.relative_to(cache_copy).as_posix()}: its SHA-256" in _refusal(capsys)
    native.unlink()
    native.write_bytes(original)
    plugin = dist / "plugins" / "extra" / "extra.jar"
    plugin.parent.mkdir()
    plugin.write_bytes(b"PK")
    assert f"refused {plugin.relative_to(cache_copy).as_posix()}: it has no pin" in _refusal(capsys)


def test_a_fetch_that_brings_other_jars_is_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mvn resolving something else than the pinned jars (a changed POM, a hijacked mirror):
    refused before the entry is published, so the next run does not use it either."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    mvn = bin_dir / "mvn"
    mvn.write_text(
        "#!/bin/sh\n"
        'for arg; do case "$arg" in -DoutputDirectory=*) out="${arg#*=}";; esac; done\n'
        'mkdir -p "$out" && echo not-kafka > "$out/kafka-clients-'
        + versions.KAFKA_VERSION
        + '.jar"\n'
    )
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    cache = tmp_path / "cache"
    with pytest.raises(DevServicesError, match=r"refused kafka-.*/libs/kafka-clients-.*SHA-256"):
        fetch.kafka_libs(cache)
    assert not (cache / fetch.kafka_entry_name()).exists()


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
