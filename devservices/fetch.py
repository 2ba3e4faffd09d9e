"""Download (via the machine's Maven), verify and unpack distributions into the shared cache.

A cache entry is a directory with a `.verified` marker written last; if the marker exists mvn is
not even invoked. Every file the services load (each Kafka jar, with the native libraries inside
zstd-jni, snappy-java and lz4-java; each file the Elasticsearch zip unpacks to, and the zip) has
its SHA-256 pinned in `pins.sha256`, checked when fetched and again each time an entry is used:
a file without a pin, a different file or a missing one refuses the entry, naming the file.
`python -m devservices pins --update` rewrites the pins (see `versions.py`).
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
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from xml.sax.saxutils import escape

from devservices import versions
from devservices.errors import DevServicesError
from devservices.report import log

MARKER = ".verified"
PINS_FILE = Path(__file__).with_name("pins.sha256")
_PINS_HEADER = (
    "# SHA-256 of every file devservices fetches or unpacks, by its path in the cache\n"
    "# (~/.cache/arbitrage). Written by `python -m devservices pins --update`: do not edit.\n"
)
_REFETCH = (
    "delete {entry} and run again to fetch it afresh; if the same file is refused again, the "
    "download is not the pinned artifact (if the version was bumped on purpose, run "
    "`python -m devservices pins --update` and review the diff)"
)


def file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_pins(path: Path = PINS_FILE) -> dict[str, str]:
    """The pins: path in the cache → SHA-256 (sha256sum's format, comments allowed)."""
    pins: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name or name in pins:
            raise DevServicesError(f"{path.name} line {number} is not `<sha256>  <path>`: {line!r}")
        pins[name] = digest.lower()
    return pins


def write_pins(pins: dict[str, str], path: Path = PINS_FILE) -> None:
    lines = [f"{digest}  {name}\n" for name, digest in sorted(pins.items())]
    path.write_text(_PINS_HEADER + "".join(lines))


def _files(directory: Path) -> Iterator[Path]:
    """Every file under directory; a symlink or special file is refused (it could point at an
    unpinned one)."""
    for root, dirs, names in os.walk(directory):
        for name in sorted(dirs) + sorted(names):
            path = Path(root) / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise DevServicesError(
                    f"refused {path}: not a regular file or directory, so it cannot be pinned."
                )
            if path.is_file():
                yield path


def digests(directory: Path, name: str) -> dict[str, str]:
    """SHA-256 of every file under directory, keyed by its path in the cache (name/...)."""
    return {
        f"{name}/{path.relative_to(directory).as_posix()}": file_digest(path, "sha256")
        for path in _files(directory)
    }


def verify_pinned(directory: Path, name: str, entry: Path, pins: dict[str, str]) -> None:
    """Refuse directory (the cache entry at `entry`) unless its files are exactly the pinned
    ones under `name`, byte for byte."""
    found = digests(directory, name)
    remedy = _REFETCH.format(entry=entry)
    for path, actual in found.items():
        expected = pins.get(path)
        if expected is None:
            raise DevServicesError(
                f"refused {path}: it has no pin in devservices/{PINS_FILE.name}, and every file "
                f"there is loaded; {remedy}."
            )
        if actual != expected:
            raise DevServicesError(
                f"refused {path}: its SHA-256 is {actual}, pinned {expected}; {remedy}."
            )
    missing = sorted(path for path in pins if path.startswith(name + "/") and path not in found)
    if missing:
        raise DevServicesError(
            f"refused {name}: {len(missing)} pinned file(s) missing, the first {missing[0]}; "
            f"{remedy}."
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


def run_mvn(args: Sequence[str], cwd: Path, what: str) -> None:
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


def kafka_entry_name() -> str:
    return f"kafka-{versions.KAFKA_VERSION}"


def elasticsearch_entry_name() -> str:
    return f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"


def _mvn_kafka(entry: Path, mvn_args: Sequence[str] = ()) -> Path:
    """Kafka's jars and their runtime dependencies into entry/libs (unchecked)."""
    (entry / "pom.xml").write_text(_kafka_pom())
    run_mvn(
        [
            *mvn_args,
            f"{versions.MAVEN_DEPENDENCY_PLUGIN}:copy-dependencies",
            f"-DoutputDirectory={entry / 'libs'}",
            "-DincludeScope=runtime",
        ],
        cwd=entry,
        what=f"Kafka {versions.KAFKA_VERSION} jars",
    )
    return entry / "libs"


def kafka_libs(cache_dir: Path) -> Path:
    """Directory with all Kafka runtime + tools jars, fetched on first use, each jar checked
    against its pin every time."""
    pins = load_pins()
    name = kafka_entry_name()
    entry = cache_dir / name
    if not is_cached(entry):
        _fetch_kafka(cache_dir, entry, pins)
    verify_pinned(entry / "libs", f"{name}/libs", entry, pins)
    return entry / "libs"


def _fetch_kafka(cache_dir: Path, entry: Path, pins: dict[str, str]) -> None:
    with cache_lock(cache_dir):
        if is_cached(entry):  # another process filled it while we waited
            return
        log.info("fetching Kafka %s jars via mvn…", versions.KAFKA_VERSION)
        started = time.monotonic()
        tmp = _fresh_tmp(cache_dir, "kafka")
        libs = _mvn_kafka(tmp)
        verify_pinned(libs, f"{entry.name}/libs", tmp, pins)
        jars = sorted(p.name for p in libs.glob("*.jar"))
        size = sum((libs / j).stat().st_size for j in jars)
        _publish(tmp, entry, {"kafka": versions.KAFKA_VERSION, "jars": jars, "bytes": size})
        log.info(
            "fetched %d Kafka jars (%.0f MiB) in %.1fs",
            len(jars),
            size / 2**20,
            time.monotonic() - started,
        )


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


def _mvn_elasticsearch(tmp: Path, mvn_args: Sequence[str] = ()) -> Path:
    """The Elasticsearch zip into tmp (unchecked)."""
    run_mvn(
        [
            *mvn_args,
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
    return archive


def _unpack_elasticsearch(archive: Path, dest: Path) -> Path:
    _extract_zip(archive, dest)
    dist = dest / f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"
    if not (dist / "bin" / "elasticsearch").is_file():
        raise DevServicesError(
            f"{archive.name} did not unpack to {dist.name}/bin/elasticsearch; "
            "check ELASTICSEARCH_ARTIFACT in devservices/versions.py."
        )
    return dist


def elasticsearch_dist(cache_dir: Path) -> Path:
    """Unpacked Elasticsearch distribution (its ES_HOME), fetched on first use, each file
    checked against its pin every time."""
    pins = load_pins()
    name = elasticsearch_entry_name()
    entry = cache_dir / name
    dist = entry / f"elasticsearch-{versions.ELASTICSEARCH_VERSION}"
    if not is_cached(entry):
        _fetch_elasticsearch(cache_dir, entry, pins)
    verify_pinned(dist, f"{name}/{dist.name}", entry, pins)
    return dist


def _fetch_elasticsearch(cache_dir: Path, entry: Path, pins: dict[str, str]) -> None:
    with cache_lock(cache_dir):
        if is_cached(entry):
            return
        log.info("fetching Elasticsearch %s via mvn…", versions.ELASTICSEARCH_VERSION)
        started = time.monotonic()
        tmp = _fresh_tmp(cache_dir, "elasticsearch")
        archive = _mvn_elasticsearch(tmp)
        size = archive.stat().st_size
        zip_sha256 = file_digest(archive, "sha256")
        if pins.get(archive.name) != zip_sha256:
            raise DevServicesError(
                f"refused {archive.name}: its SHA-256 is {zip_sha256}, pinned "
                f"{pins.get(archive.name, 'nothing')} (devservices/{PINS_FILE.name}); the "
                "download is not the pinned artifact — delete it from ~/.m2 and retry, or if the "
                "version was bumped on purpose run `python -m devservices pins --update`."
            )
        log.info("unpacking %s (%.0f MiB)…", archive.name, size / 2**20)
        dist = _unpack_elasticsearch(archive, tmp)
        archive.unlink()  # the unpacked tree is the cache; mvn keeps its own copy in ~/.m2
        verify_pinned(dist, f"{entry.name}/{dist.name}", tmp, pins)
        _publish(
            tmp,
            entry,
            {
                "elasticsearch": versions.ELASTICSEARCH_VERSION,
                "zip_sha256": zip_sha256,
                "zip_bytes": size,
            },
        )
        log.info("fetched Elasticsearch in %.1fs", time.monotonic() - started)


def update_pins(maven_repo: Path | None = None, path: Path = PINS_FILE) -> dict[str, str]:
    """Fetch every artifact afresh and write its SHA-256 (and the zip's files') to path.

    By default into a new, empty Maven repository, so nothing already in ~/.m2 is trusted: every
    byte comes from Maven Central (or the mirror in ~/.m2/settings.xml), and the jars are checked
    against the SHA-1 served beside them (mvn -C). Mirrors may serve the Elasticsearch zip without
    one, so its SHA-512 is logged to compare with the one Elastic publishes.
    """
    with tempfile.TemporaryDirectory(prefix="arbitrage-pins-") as work_dir:
        work = Path(work_dir)
        repo = [f"-Dmaven.repo.local={maven_repo or work / 'm2'}"]
        kafka = work / kafka_entry_name()
        kafka.mkdir()
        pins = digests(_mvn_kafka(kafka, ["-C", *repo]), f"{kafka.name}/libs")
        es = work / elasticsearch_entry_name()
        es.mkdir()
        archive = _mvn_elasticsearch(es, repo)
        pins[archive.name] = file_digest(archive, "sha256")
        log.info(
            "%s SHA-512 %s: compare it with the .sha512 Elastic publishes for it",
            archive.name,
            file_digest(archive, "sha512"),
        )
        dist = _unpack_elasticsearch(archive, es)
        pins.update(digests(dist, f"{es.name}/{dist.name}"))
    write_pins(pins, path)
    return pins
