"""Download (via the machine's Maven), verify and unpack distributions into the shared cache.

A cache entry is a directory with a `.verified` marker written last; if the marker exists the
entry is used as is and mvn is not even invoked.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.sax.saxutils import escape

from devservices import versions
from devservices.errors import DevServicesError
from devservices.report import log

MARKER = ".verified"


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_checksum(path: Path, algorithm: str, expected: str) -> None:
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise DevServicesError(
            f"checksum mismatch for {path.name}: {algorithm} is {actual}, expected {expected}; "
            "the download is corrupt or not the pinned artifact — delete it from ~/.m2 and retry, "
            "or update the pin in devservices/versions.py if the version was bumped on purpose."
        )


def is_cached(entry: Path) -> bool:
    return (entry / MARKER).is_file()


@contextlib.contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialize concurrent `up`s (e.g. several shells or clones) filling the same cache."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def run_mvn(args: list[str], cwd: Path, what: str) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise DevServicesError(
            f"`mvn` (Apache Maven) is not on PATH but is needed to fetch {what}; "
            "install it (e.g. apt-get install maven) and retry."
        )
    argv = [mvn, "-B", "-q", *args]
    log.debug("running %s (in %s)", " ".join(argv), cwd)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        output = (proc.stdout + proc.stderr).strip().splitlines()
        raise DevServicesError(
            f"mvn failed to fetch {what} (exit {proc.returncode}); check that Maven Central "
            "(or the mirror/proxy in ~/.m2/settings.xml) is reachable, then retry.",
            details="\n".join(output[-25:]),
        )


def _fresh_tmp(cache_dir: Path, name: str) -> Path:
    tmp = cache_dir / f".tmp-{name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, entry: Path, marker: dict[str, object]) -> None:
    (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    shutil.rmtree(entry, ignore_errors=True)  # a half-built entry without marker
    tmp.rename(entry)


def _kafka_pom() -> str:
    deps = []
    for coordinate in versions.KAFKA_ARTIFACTS:
        group, artifact, version = (escape(part) for part in coordinate.split(":"))
        deps.append(
            f"    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId>"
            f"<version>{version}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0">\n'
        "  <modelVersion>4.0.0</modelVersion>\n"
        "  <groupId>local.devservices</groupId>\n"
        "  <artifactId>kafka-runtime</artifactId>\n"
        f"  <version>{versions.KAFKA_VERSION}</version>\n"
        "  <packaging>pom</packaging>\n"
        "  <dependencies>\n" + "\n".join(deps) + "\n  </dependencies>\n</project>\n"
    )


def kafka_libs(cache_dir: Path) -> Path:
    """Directory with all Kafka runtime + tools jars, fetched and verified on first use."""
    entry = cache_dir / f"kafka-{versions.KAFKA_VERSION}"
    if is_cached(entry):
        return entry / "libs"
    with cache_lock(cache_dir):
        if is_cached(entry):  # another process filled it while we waited
            return entry / "libs"
        log.info("fetching Kafka %s jars via mvn…", versions.KAFKA_VERSION)
        started = time.monotonic()
        tmp = _fresh_tmp(cache_dir, "kafka")
        (tmp / "pom.xml").write_text(_kafka_pom())
        run_mvn(
            [
                f"{versions.MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
                f"-DoutputDirectory={tmp / 'libs'}",
                "-DincludeScope=runtime",
            ],
            cwd=tmp,
            what=f"Kafka {versions.KAFKA_VERSION} jars",
        )
        for jar, sha256 in versions.KAFKA_JAR_SHA256.items():
            path = tmp / "libs" / jar
            if not path.is_file():
                raise DevServicesError(
                    f"mvn did not produce {jar}; the pinned Kafka artifacts may be wrong — check "
                    "devservices/versions.py."
                )
            verify_checksum(path, "sha256", sha256)
        jars = sorted(p.name for p in (tmp / "libs").glob("*.jar"))
        size = sum((tmp / "libs" / j).stat().st_size for j in jars)
        _publish(tmp, entry, {"kafka": versions.KAFKA_VERSION, "jars": jars, "bytes": size})
        log.info(
            "fetched %d Kafka jars (%.0f MiB) in %.1fs",
            len(jars),
            size / 2**20,
            time.monotonic() - started,
        )
    return entry / "libs"


def _extract_zip(archive: Path, dest: Path) -> None:
    """Unzip keeping Unix permission bits (zipfile drops them, and bin/* must be executable)."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(root):
                raise DevServicesError(f"{archive.name} contains an unsafe path {info.filename!r}.")
            zf.extract(info, dest)
            mode = (info.external_attr >> 16) & 0o777
            if mode:
                os.chmod(target, mode | (stat.S_IRUSR | stat.S_IWUSR))


def elasticsearch_dist(cache_dir: Path) -> Path:
    """Unpacked, verified Elasticsearch distribution (its ES_HOME), fetched on first use."""
    entry = cache_dir / f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"
    dist = entry / f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"
    if is_cached(entry):
        return dist
    with cache_lock(cache_dir):
        if is_cached(entry):
            return dist
        log.info("fetching Elasticsearch %s via mvn…", versions.ELASTICSEARCH_VERSION)
        started = time.monotonic()
        tmp = _fresh_tmp(cache_dir, "elasticsearch")
        run_mvn(
            [
                f"{versions.MAVEN_DEPENDENCY_PLUGIN}:copy",
                f"-Dartifact={versions.ELASTICSEARCH_ARTIFACT}",
                f"-DoutputDirectory={tmp}",
            ],
            cwd=tmp,
            what=f"Elasticsearch {versions.ELASTICSEARCH_VERSION}",
        )
        archive = tmp / versions.ELASTICSEARCH_ZIP_NAME
        if not archive.is_file():
            raise DevServicesError(
                f"mvn did not produce {archive.name}; check ELASTICSEARCH_ARTIFACT in "
                "devservices/versions.py."
            )
        size = archive.stat().st_size
        verify_checksum(archive, "sha512", versions.ELASTICSEARCH_ZIP_SHA512)
        log.info("unpacking %s (%.0f MiB)…", archive.name, size / 2**20)
        _extract_zip(archive, tmp)
        archive.unlink()  # the unpacked tree is the cache; mvn keeps its own copy in ~/.m2
        if not (tmp / dist.name / "bin" / "elasticsearch").is_file():
            raise DevServicesError(
                f"{archive.name} did not unpack to {dist.name}/bin/elasticsearch; "
                "check ELASTICSEARCH_ARTIFACT in devservices/versions.py."
            )
        _publish(
            tmp,
            entry,
            {
                "elasticsearch": versions.ELASTICSEARCH_VERSION,
                "zip_sha512": versions.ELASTICSEARCH_ZIP_SHA512,
                "zip_bytes": size,
            },
        )
        log.info("fetched Elasticsearch in %.1fs", time.monotonic() - started)
    return dist
