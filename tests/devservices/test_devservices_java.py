"""Java version parsing and JDK discovery (no real JVM needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devservices.errors import DevServicesError
from devservices.java import (
    find_java,
    find_jdk,
    major_version,
    parse_java_version_output,
    parse_release_file,
)


@pytest.mark.parametrize(
    ("version", "major"),
    [("17.0.15", 17), ("1.8.0_292", 8), ("25", 25), ("21-ea", 21), ("11.0.2+9", 11), ("x", None)],
)
def test_major_version(version: str, major: int | None) -> None:
    assert major_version(version) == major


def test_parse_java_version_output() -> None:
    openjdk = (
        'openjdk version "17.0.15" 2025-04-15\n'
        "OpenJDK Runtime Environment (build 17.0.15+6-Debian-1deb12u1)\n"
    )
    assert parse_java_version_output(openjdk) == 17
    assert parse_java_version_output('java version "1.8.0_202"\nJava(TM) SE') == 8
    assert parse_java_version_output('openjdk version "25.0.3" 2026-04-21 LTS') == 25
    assert parse_java_version_output("Error: could not find libjava.so") is None


def test_parse_release_file() -> None:
    text = 'IMPLEMENTOR="Eclipse Adoptium"\nJAVA_VERSION="25.0.3"\nOS_ARCH="x86_64"\n'
    assert parse_release_file(text) == 25
    assert parse_release_file('JAVA_VERSION="1.8.0_292"\n') == 8
    assert parse_release_file('IMPLEMENTOR="x"\n') is None


def fake_jdk(root: Path, name: str, version: str | None, *, java: bool = True) -> Path:
    home = root / name
    (home / "bin").mkdir(parents=True)
    if version is not None:
        (home / "release").write_text(f'IMPLEMENTOR="test"\nJAVA_VERSION="{version}"\n')
    if java:
        script = home / "bin" / "java"
        script.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\"' >&2\n")
        script.chmod(0o755)
    return home


def test_find_jdk_picks_newest_jdk_21_plus(tmp_path: Path) -> None:
    fake_jdk(tmp_path, "java-17-openjdk", "17.0.15")
    fake_jdk(tmp_path, "temurin-21", "21.0.4")
    newest = fake_jdk(tmp_path, "temurin-25", "25.0.3")
    fake_jdk(tmp_path, "broken-99", "99", java=False)  # no bin/java: ignored
    (tmp_path / "default-java").symlink_to(tmp_path / "java-17-openjdk")
    assert find_jdk(env={}, jvm_dirs=[tmp_path]) == newest


def test_find_jdk_prefers_java_home_when_new_enough(tmp_path: Path) -> None:
    jdk21 = fake_jdk(tmp_path, "temurin-21", "21.0.4")
    fake_jdk(tmp_path, "temurin-25", "25.0.3")
    assert find_jdk(env={"JAVA_HOME": str(jdk21)}, jvm_dirs=[tmp_path]) == jdk21


def test_find_jdk_skips_too_old_java_home(tmp_path: Path) -> None:
    jdk17 = fake_jdk(tmp_path, "java-17", "17.0.15")
    jdk25 = fake_jdk(tmp_path, "temurin-25", "25.0.3")
    assert find_jdk(env={"JAVA_HOME": str(jdk17)}, jvm_dirs=[tmp_path]) == jdk25


def test_find_jdk_honours_es_java_home(tmp_path: Path) -> None:
    jdk21 = fake_jdk(tmp_path, "temurin-21", "21.0.4")
    fake_jdk(tmp_path, "temurin-25", "25.0.3")
    assert find_jdk(env={"ES_JAVA_HOME": str(jdk21)}, jvm_dirs=[tmp_path]) == jdk21


def test_find_jdk_rejects_old_es_java_home(tmp_path: Path) -> None:
    jdk17 = fake_jdk(tmp_path, "java-17", "17.0.15")
    fake_jdk(tmp_path, "temurin-25", "25.0.3")
    with pytest.raises(DevServicesError, match=r"ES_JAVA_HOME=.*java-17.*Java 17"):
        find_jdk(env={"ES_JAVA_HOME": str(jdk17)}, jvm_dirs=[tmp_path])


def test_find_jdk_falls_back_to_running_java_without_release_file(tmp_path: Path) -> None:
    home = fake_jdk(tmp_path, "custom", None)
    (home / "bin" / "java").write_text("#!/bin/sh\necho 'openjdk version \"22.0.1\"' >&2\n")
    assert find_jdk(env={}, jvm_dirs=[tmp_path]) == home


def test_find_jdk_none_found_names_what_was_tried(tmp_path: Path) -> None:
    fake_jdk(tmp_path, "java-17", "17.0.15")
    with pytest.raises(DevServicesError) as excinfo:
        find_jdk(env={"JAVA_HOME": str(tmp_path / "java-17")}, jvm_dirs=[tmp_path])
    message = excinfo.value.message
    assert "no JDK 21+" in message
    assert f"{tmp_path}/*" in message
    assert "JAVA_HOME=" in message
    assert "ES_JAVA_HOME" in message


def test_find_java_without_java_on_path(tmp_path: Path) -> None:
    with pytest.raises(DevServicesError, match=r"no `java` on PATH"):
        find_java(env={"PATH": str(tmp_path)})


def test_find_java_rejects_old_java(tmp_path: Path) -> None:
    home = fake_jdk(tmp_path, "java-11", "11.0.2")
    with pytest.raises(DevServicesError, match=r"Java 11.*needs Java 17\+"):
        find_java(env={"PATH": str(home / "bin")})


def test_find_java_uses_path(tmp_path: Path) -> None:
    home = fake_jdk(tmp_path, "java-17", "17.0.15")
    assert find_java(env={"PATH": str(home / "bin")}) == home / "bin" / "java"
