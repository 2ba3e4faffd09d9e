"""Finding a suitable `java` for Kafka and a JDK >= 21 for Elasticsearch."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from devservices.errors import DevServicesError
from devservices.versions import ELASTICSEARCH_MIN_JAVA, KAFKA_MIN_JAVA

DEFAULT_JVM_DIRS: tuple[Path, ...] = (Path("/usr/lib/jvm"),)

_VERSION_RE = re.compile(r'version\s+"([^"]+)"')
_RELEASE_RE = re.compile(r'^JAVA_VERSION="?([^"\s]+)"?\s*$', re.MULTILINE)


def major_version(version: str) -> int | None:
    """'17.0.15' -> 17, '1.8.0_292' -> 8, '25' -> 25, '21-ea' -> 21; None if unparsable."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version.strip())
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:  # pre-9 scheme: 1.<major>
        return int(match.group(2))
    return major


def parse_java_version_output(output: str) -> int | None:
    """Major version from `java -version` output (which goes to stderr)."""
    match = _VERSION_RE.search(output)
    return major_version(match.group(1)) if match else None


def parse_release_file(text: str) -> int | None:
    """Major version from a JDK's `release` file (JAVA_VERSION="25.0.3")."""
    match = _RELEASE_RE.search(text)
    return major_version(match.group(1)) if match else None


def java_binary_version(java: Path | str) -> int | None:
    try:
        proc = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError:
        return None
    return parse_java_version_output(proc.stderr + proc.stdout)


def java_home_version(home: Path) -> int | None:
    """Version of a JDK home: the `release` file is cheap; fall back to running bin/java."""
    java = home / "bin" / "java"
    if not os.access(java, os.X_OK):
        return None
    release = home / "release"
    if release.is_file():
        version = parse_release_file(release.read_text(errors="replace"))
        if version is not None:
            return version
    return java_binary_version(java)


def find_java(env: Mapping[str, str] | None = None, minimum: int = KAFKA_MIN_JAVA) -> Path:
    """The `java` for Kafka: $JAVA_HOME/bin/java if set, else `java` on PATH."""
    env = os.environ if env is None else env
    if env.get("JAVA_HOME"):
        java = Path(env["JAVA_HOME"]) / "bin" / "java"
        if not os.access(java, os.X_OK):
            raise DevServicesError(
                f"JAVA_HOME={env['JAVA_HOME']} has no executable bin/java; fix or unset JAVA_HOME."
            )
    else:
        found = shutil.which("java", path=env.get("PATH"))
        if not found:
            raise DevServicesError(
                f"no `java` on PATH; install a JDK {minimum}+ "
                "(e.g. apt-get install openjdk-17-jdk-headless) or set JAVA_HOME."
            )
        java = Path(found)
    version = java_binary_version(java)
    if version is None or version < minimum:
        raise DevServicesError(
            f"{java} is Java {version or 'of unknown version'}, Kafka needs Java {minimum}+; "
            f"set JAVA_HOME to a JDK {minimum}+."
        )
    return java


def find_jdk(
    env: Mapping[str, str] | None = None,
    minimum: int = ELASTICSEARCH_MIN_JAVA,
    jvm_dirs: Iterable[Path] = DEFAULT_JVM_DIRS,
) -> Path:
    """A JDK home >= minimum: $ES_JAVA_HOME, else $JAVA_HOME if new enough, else the newest
    JDK under /usr/lib/jvm."""
    env = os.environ if env is None else env
    explicit = env.get("ES_JAVA_HOME")
    if explicit:
        version = java_home_version(Path(explicit))
        if version is None or version < minimum:
            raise DevServicesError(
                f"ES_JAVA_HOME={explicit} is not a JDK {minimum}+ "
                f"(found {'no bin/java' if version is None else f'Java {version}'}); "
                f"point ES_JAVA_HOME at a JDK {minimum}+."
            )
        return Path(explicit)
    tried: list[str] = []
    java_home = env.get("JAVA_HOME")
    if java_home:
        version = java_home_version(Path(java_home))
        if version is not None and version >= minimum:
            return Path(java_home)
        tried.append(f"JAVA_HOME={java_home} (Java {version or '?'})")
    best: tuple[int, Path] | None = None
    for jvm_dir in jvm_dirs:
        tried.append(f"{jvm_dir}/*")
        if not jvm_dir.is_dir():
            continue
        for home in sorted(jvm_dir.iterdir()):
            if home.is_symlink() or not home.is_dir():
                continue  # Debian adds alias symlinks; the real dir is listed too
            version = java_home_version(home)
            if version is not None and version >= minimum and (best is None or version > best[0]):
                best = (version, home)
    if best is None:
        raise DevServicesError(
            f"no JDK {minimum}+ found for Elasticsearch (tried {', '.join(tried)}); "
            f"install one (e.g. Temurin {minimum}) and set ES_JAVA_HOME to its home."
        )
    return best[1]
