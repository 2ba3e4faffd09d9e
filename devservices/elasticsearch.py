"""Single-node Elasticsearch from the cached integ-test-zip distribution.

Layout under .devservices/elasticsearch/: `home/` is a hard-link (or copy) tree of the cached
distribution, so the ES user can read it even when the cache sits under a private ~ (root's
/root is 0700); `config/`, `data/`, `logs/`, `tmp/` are owned by the user ES runs as.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import stat
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from devservices import fetch, versions
from devservices.errors import DevServicesError
from devservices.java import find_jdk
from devservices.process import RunAs
from devservices.report import log
from devservices.service import LaunchSpec, Service

ES_USER = "arbitrage-es"
DEFAULT_ES_JAVA_OPTS = "-Xms512m -Xmx512m"
# Inherited variables the ES launcher would warn about or obey against our wishes.
_DROP_ENV = ("JAVA_HOME", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JAVA_OPTS", "ES_HOME")


def ensure_es_user() -> RunAs | None:
    """ES refuses to run as root: when root, run it as a dedicated system user."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(ES_USER)
    except KeyError:
        useradd = shutil.which("useradd")
        if useradd is None:
            raise DevServicesError(
                f"running as root but `useradd` is missing, so the {ES_USER} user that "
                "Elasticsearch must run as cannot be created; create it yourself or run as a "
                "normal user."
            ) from None
        log.info("creating system user %s to run Elasticsearch (it refuses root)", ES_USER)
        proc = subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", ES_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise DevServicesError(
                f"`useradd {ES_USER}` failed: {proc.stderr.strip()}; create the user yourself."
            ) from None
        entry = pwd.getpwnam(ES_USER)
    return RunAs(entry.pw_uid, entry.pw_gid)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other filesystem or hard links not allowed: fall back to a copy
        shutil.copy2(src, dst)


def _chown_tree(path: Path, run_as: RunAs) -> None:
    st = path.stat()
    if (st.st_uid, st.st_gid) == (run_as.uid, run_as.gid):
        return  # already done on an earlier `up`
    os.chown(path, run_as.uid, run_as.gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), run_as.uid, run_as.gid)


def check_reachable(path: Path, run_as: RunAs, user: str = ES_USER) -> None:
    """Every ancestor must be searchable by the ES user, or it fails with an obscure error."""
    for parent in [path, *path.parents]:
        st = parent.stat()
        if st.st_uid == run_as.uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == run_as.gid and st.st_mode & stat.S_IXGRP:
            continue
        raise DevServicesError(
            f"Elasticsearch runs as {user}, which cannot enter {parent} "
            f"(mode {stat.filemode(st.st_mode)}); `chmod o+x {parent}` or point "
            "DEVSERVICES_HOME / ES_JAVA_HOME somewhere it can reach."
        )


class Elasticsearch(Service):
    name = "elasticsearch"

    @property
    def address(self) -> str:
        return f"http://{self.settings.host}:{self.settings.es_port}"

    def ports(self) -> list[tuple[int, str]]:
        return [
            (self.settings.es_port, "ES_PORT"),
            (self.settings.es_transport_port, "ES_TRANSPORT_PORT"),
        ]

    @property
    def es_home(self) -> Path:
        return self.home / "home"

    @property
    def config_dir(self) -> Path:
        return self.home / "config"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"

    @property
    def tmp_dir(self) -> Path:
        return self.home / "tmp"

    @property
    def main_log(self) -> Path:
        return self.logs_dir / "arbitrage-local.log"  # <cluster.name>.log, plain text

    def failure_log_files(self) -> list[Path]:
        return [self.console_log]  # ES logs everything to stdout as well as to main_log

    def elasticsearch_yml(self) -> str:
        s = self.settings
        settings: dict[str, str | int | bool] = {
            "cluster.name": "arbitrage-local",
            "node.name": "local",
            "discovery.type": "single-node",
            "network.host": s.host,
            "http.port": s.es_port,
            "transport.port": s.es_transport_port,
            "path.data": str(self.data_dir),
            "path.logs": str(self.logs_dir),
            "xpack.security.enabled": False,
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        lines = ["# Generated by devservices on every `up`; edit devservices/elasticsearch.py."]
        # JSON scalars are valid YAML and quote paths safely.
        lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def jvm_options(self) -> str:
        logs = self.logs_dir
        return "\n".join(
            [
                "# Generated by devservices: keep JVM crash/heap files in the logs dir, since",
                "# ES_HOME (the working directory) is not writable by the ES user.",
                f"-XX:ErrorFile={logs}/hs_err_pid%p.log",
                f"-XX:HeapDumpPath={logs}",
                "",
            ]
        )

    def _install_home(self, dist: Path) -> None:
        """(Re)build home/ and config/ from the cached distribution when missing or outdated."""
        stamp = self.home / ".installed-version"
        if (
            stamp.is_file()
            and stamp.read_text().strip() == versions.ELASTICSEARCH_VERSION
            and (self.es_home / "bin" / "elasticsearch").is_file()
            and (self.config_dir / "jvm.options").is_file()
        ):
            return
        log.info("elasticsearch: installing %s into %s", dist.name, self.es_home)
        for stale in (self.es_home, self.config_dir):
            shutil.rmtree(stale, ignore_errors=True)
        shutil.copytree(
            dist,
            self.es_home,
            symlinks=True,
            copy_function=_link_or_copy,
            ignore=lambda d, names: ["config", "logs"] if Path(d) == dist else [],
        )
        # A real copy: ES writes its keystore here and the GC log path below must be ours.
        shutil.copytree(dist / "config", self.config_dir)
        jvm_options = self.config_dir / "jvm.options"
        gc_line = (
            f"-Xlog:gc*,gc+age=trace,safepoint:file={self.logs_dir}/gc.log:"
            "utctime,level,pid,tags:filecount=4,filesize=16m"
        )
        text = re.sub(r"(?m)^-Xlog:.*file=.*$", lambda _: gc_line, jvm_options.read_text())
        jvm_options.write_text(text)
        stamp.write_text(versions.ELASTICSEARCH_VERSION + "\n")

    def prepare(self) -> LaunchSpec:
        jdk = find_jdk()
        dist = fetch.elasticsearch_dist(self.settings.cache_dir)
        run_as = ensure_es_user()
        self.home.mkdir(parents=True, exist_ok=True)
        self._install_home(dist)
        (self.config_dir / "elasticsearch.yml").write_text(self.elasticsearch_yml())
        options_d = self.config_dir / "jvm.options.d"
        options_d.mkdir(exist_ok=True)
        (options_d / "devservices.options").write_text(self.jvm_options())
        writable = (self.config_dir, self.data_dir, self.logs_dir, self.tmp_dir)
        for directory in writable:
            directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        env.update(
            ES_JAVA_HOME=str(jdk),
            ES_PATH_CONF=str(self.config_dir),
            ES_TMPDIR=str(self.tmp_dir),
            ES_JAVA_OPTS=os.environ.get("ES_JAVA_OPTS", DEFAULT_ES_JAVA_OPTS),
        )
        if run_as is not None:
            for directory in writable:
                _chown_tree(directory, run_as)
            # Files written by root during install/regeneration must stay readable to ES.
            for path in self.config_dir.rglob("*"):
                os.lchown(path, run_as.uid, run_as.gid)
            check_reachable(self.es_home, run_as)
            check_reachable(jdk, run_as)
            env.update(HOME=str(self.tmp_dir), USER=ES_USER, LOGNAME=ES_USER)
        return LaunchSpec(
            argv=[str(self.es_home / "bin" / "elasticsearch")],
            env=env,
            cwd=self.es_home,
            run_as=run_as,
        )

    def is_healthy(self) -> bool:
        url = f"{self.address}/_cluster/health?wait_for_status=yellow&timeout=1s"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                body = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return False  # includes HTTP 408 (not yellow yet) and connection refused
        return body.get("status") in ("yellow", "green")

    def hint(self) -> str:
        return (
            "see `python -m devservices logs elasticsearch`; to reset its data run "
            f"`python -m devservices down elasticsearch` and delete {self.data_dir}."
        )
