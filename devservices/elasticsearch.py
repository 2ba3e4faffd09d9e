"""Elasticsearch from the cached integ-test-zip distribution: one node, or a cluster of ES_NODES
nodes on consecutive ports (docs/decisions.md, 43).

Layout under .devservices/elasticsearch/ (a cluster: .devservices/elasticsearch-<n>/ per node):
`home/` is a hard-link (or copy) tree of the cached distribution, so the ES user can read it even
when the cache sits under a private ~ (root's /root is 0700); `config/`, `data/`, `logs/`,
`tmp/` are owned by the user ES runs as.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

from devservices import fetch, secure, versions
from devservices.errors import DevServicesError
from devservices.java import find_jdk
from devservices.process import RunAs
from devservices.report import log
from devservices.service import LaunchSpec, Service
from devservices.settings import Settings
from devservices.users import check_reachable as check_reachable_by
from devservices.users import chown_tree, ensure_system_user

ES_USER = "arbitrage-es"
DEFAULT_ES_JAVA_OPTS = "-Xms512m -Xmx512m"
# Per node of a cluster (ES_NODES>1): three of them fit beside a Kafka cluster on a laptop.
CLUSTER_NODE_JAVA_OPTS = "-Xms384m -Xmx384m"
CLUSTER_NAME = "arbitrage-local"
# Inherited variables the ES launcher would warn about or obey against our wishes.
_DROP_ENV = ("JAVA_HOME", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JAVA_OPTS", "ES_HOME")


def ensure_es_user() -> RunAs | None:
    """ES refuses to run as root: when root, run it as a dedicated system user."""
    return ensure_system_user(ES_USER, "Elasticsearch")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other filesystem or hard links not allowed: fall back to a copy
        shutil.copy2(src, dst)


def es_role(account_key: str) -> str:
    """The file-realm role of an account of arbitrage/domain/access.py
    (``arbitrage_enrichment``)."""
    return f"arbitrage_{account_key}"


def check_reachable(path: Path, run_as: RunAs, user: str = ES_USER) -> None:
    check_reachable_by(path, run_as, user, "Elasticsearch", "DEVSERVICES_HOME / ES_JAVA_HOME")


class Elasticsearch(Service):
    """One Elasticsearch node.

    ES_NODES=1 (the default) is the single node ``elasticsearch`` in ``.devservices/
    elasticsearch`` (discovery.type single-node); with more, node i (0-based) is
    ``elasticsearch-<i+1>`` in ``.devservices/elasticsearch-<i+1>``, on the settings' ports + i,
    every node master-eligible and a data node, finding the others on their transport ports.
    """

    name = "elasticsearch"

    def __init__(self, settings: Settings, node: int = 0) -> None:
        if not 0 <= node < settings.es_nodes:
            raise DevServicesError(
                f"there is no Elasticsearch node {node + 1} with ES_NODES={settings.es_nodes}"
            )
        self.node = node
        # An instance attribute: Service.__init__ derives the home and pid file from it.
        self.name = node_name(settings, node)
        super().__init__(settings)

    @property
    def clustered(self) -> bool:
        return self.settings.es_nodes > 1

    @property
    def port(self) -> int:
        return self.settings.es_port + self.node

    @property
    def transport_port(self) -> int:
        return self.settings.es_transport_port + self.node

    @property
    def address(self) -> str:
        scheme = "https" if self.settings.secure else "http"
        return f"{scheme}://{self.settings.host}:{self.port}"

    def ports(self) -> list[tuple[int, str]]:
        offset = f"+{self.node}" if self.node else ""
        return [
            (self.port, f"ES_PORT{offset}"),
            (self.transport_port, f"ES_TRANSPORT_PORT{offset}"),
        ]

    @property
    def joined_stamp(self) -> Path:
        """Written once this node has been part of a healthy cluster: from then on it must not
        be given cluster.initial_master_nodes (a bootstrap setting for the very first start)."""
        return self.home / "cluster-joined"

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
        return self.logs_dir / f"{CLUSTER_NAME}.log"  # <cluster.name>.log, plain text

    def failure_log_files(self) -> list[Path]:
        return [self.console_log]  # ES logs everything to stdout as well as to main_log

    def elasticsearch_yml(self) -> str:
        s = self.settings
        settings: dict[str, str | int | bool | list[str]] = {
            "cluster.name": CLUSTER_NAME,
            "node.name": self.name if self.clustered else "local",
            "discovery.type": "single-node",
            "network.host": s.host,
            "http.port": self.port,
            "transport.port": self.transport_port,
            "path.data": str(self.data_dir),
            "path.logs": str(self.logs_dir),
            "xpack.security.enabled": False,
            "cluster.routing.allocation.disk.threshold_enabled": False,
            "action.destructive_requires_name": False,
        }
        if self.clustered:
            del settings["discovery.type"]
            settings["discovery.seed_hosts"] = [
                f"{s.host}:{port}" for port in s.es_ports(s.es_transport_port)
            ]
            if not self.joined_stamp.is_file():
                # The first start of a new cluster: these nodes vote for its first master.
                settings["cluster.initial_master_nodes"] = [
                    node_name(s, node) for node in range(s.es_nodes)
                ]
        if s.secure:
            # The integ-test-zip ships x-pack-core and x-pack-security: TLS on HTTP, the file
            # realm (users written with bin/elasticsearch-users), file roles and API keys, all
            # under the basic licence. Transport stays plain: one node, bound to loopback.
            settings.update(
                {
                    "xpack.security.enabled": True,
                    "xpack.security.http.ssl.enabled": True,
                    "xpack.security.http.ssl.key": "tls/server.key",
                    "xpack.security.http.ssl.certificate": "tls/server.pem",
                    "xpack.security.http.ssl.certificate_authorities": "tls/ca.pem",
                    "xpack.security.transport.ssl.enabled": False,
                    "xpack.security.authc.api_key.enabled": True,
                    "xpack.security.authc.anonymous.roles": "",
                }
            )
            if self.clustered:
                settings.update(
                    {
                        "xpack.security.transport.ssl.enabled": True,
                        "xpack.security.transport.ssl.verification_mode": "full",
                        "xpack.security.transport.ssl.client_authentication": "required",
                        "xpack.security.transport.ssl.key": "tls/server.key",
                        "xpack.security.transport.ssl.certificate": "tls/server.pem",
                        "xpack.security.transport.ssl.certificate_authorities": "tls/ca.pem",
                    }
                )
        lines = ["# Generated by devservices on every `up`; edit devservices/elasticsearch.py."]
        # JSON scalars are valid YAML and quote paths safely.
        lines += [f"{key}: {json.dumps(value)}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def roles_yml(self) -> str:
        """A role per account of the pipeline (arbitrage/domain/access.py: its cluster privileges
        and its index privileges), and one without index privileges for the unprivileged user."""
        from arbitrage.domain.access import local_accounts

        # Block YAML by hand: the file realm reads each top-level line as a role's start, so
        # JSON's closing brace at column 0 would be taken for a role.
        lines = ["# Generated by devservices on every `up`."]
        for account in local_accounts():
            if not (account.es_cluster or account.es_indices):
                continue  # no Elasticsearch account (the Keepa pull)
            by_privileges: dict[tuple[str, ...], list[str]] = {}
            for grant in account.es_indices:
                names = by_privileges.setdefault(grant.privileges, [])
                names += [name for name in grant.names if name not in names]
            lines += [f"{es_role(account.key)}:", f"  cluster: {json.dumps(account.es_cluster)}"]
            if by_privileges:
                lines.append("  indices:")
            for privileges, names in by_privileges.items():
                lines += [
                    f"    - names: {json.dumps(names)}",
                    f"      privileges: {json.dumps(list(privileges))}",
                ]
        # Cluster health only: a role with no privileges at all is not loaded.
        lines += ["arbitrage_nothing:", '  cluster: ["monitor"]', ""]
        return "\n".join(lines)

    def _users_tool(self, jdk: Path, *args: str, password: str) -> subprocess.CompletedProcess[str]:
        """bin/elasticsearch-users with the password on stdin (it asks twice when no ``-p``
        is given), never on the command line where `ps` would show it."""
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        env.update(ES_JAVA_HOME=str(jdk), ES_PATH_CONF=str(self.config_dir))
        return subprocess.run(
            [str(self.es_home / "bin" / "elasticsearch-users"), *args],
            input=f"{password}\n{password}\n",
            capture_output=True,
            text=True,
            check=False,
            env=env,
            cwd=self.es_home,
        )

    def file_realm_users(self) -> dict[str, tuple[str, str]]:
        """User name → (password, role) of every file-realm user."""
        from arbitrage.domain.access import local_accounts

        creds = secure.credentials(self.settings)
        users = {secure.ES_ADMIN: (creds["es_admin"], "superuser")}
        for account in local_accounts():
            if account.es_cluster or account.es_indices:
                password = creds[secure.password_key("es", account.key)]
                users[account.user] = (password, es_role(account.key))
        users[secure.UNPRIVILEGED_USER] = (creds["es_unprivileged"], "arbitrage_nothing")
        return users

    def _prepare_security(self, jdk: Path) -> None:
        """TLS files, roles and file-realm users (the passwords from devservices.secure)."""
        pki = secure.pki(self.settings)
        tls = self.config_dir / "tls"
        tls.mkdir(exist_ok=True)
        for source in (pki.ca_cert, pki.server_cert, pki.server_key):
            shutil.copyfile(source, tls / source.name)
        os.chmod(tls / pki.server_key.name, 0o600)  # handed to the ES user below, no one else
        (self.config_dir / "roles.yml").write_text(self.roles_yml())
        users = self.file_realm_users()
        users_file = self.config_dir / "users"
        known = users_file.read_text() if users_file.is_file() else ""
        # The tool starts a JVM per user (~4 s): a user already set to its current password
        # (a digest of both, kept beside the users file) is left alone.
        stamps_file = self.config_dir / "users.devservices"
        stamps = set(stamps_file.read_text().split()) if stamps_file.is_file() else set()
        done: list[str] = []
        for name, (password, _role) in users.items():
            stamp = hashlib.sha256(f"{name}\0{password}".encode()).hexdigest()
            present = f"\n{name}:" in f"\n{known}"
            if present and stamp in stamps:
                done.append(stamp)
                continue
            command = "passwd" if present else "useradd"
            proc = self._users_tool(jdk, command, name, password=password)
            if proc.returncode != 0:
                raise DevServicesError(
                    f"elasticsearch-users could not set up user {name} (exit {proc.returncode})",
                    details=(proc.stdout + proc.stderr).replace(password, "***").strip(),
                )
            done.append(stamp)
        secure.private_write(stamps_file, "\n".join(done) + "\n")
        # Who has which role, written whole: a user's role changes with devservices (no
        # secret here; the tool would only ever add roles).
        members: dict[str, list[str]] = {}
        for name, (_password, role) in users.items():
            members.setdefault(role, []).append(name)
        (self.config_dir / "users_roles").write_text(
            "".join(f"{role}:{','.join(names)}\n" for role, names in members.items())
        )

    def _auth_header(self) -> dict[str, str]:
        if not self.settings.secure:
            return {}
        password = secure.credentials(self.settings)["es_admin"]
        token = base64.b64encode(f"{secure.ES_ADMIN}:{password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.settings.secure:
            return None
        return ssl.create_default_context(cafile=str(secure.pki(self.settings).ca_cert))

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
        if not self.data_dir.is_dir() or not any(self.data_dir.iterdir()):
            # No data (new, or deleted): a node that has never joined its cluster.
            self.joined_stamp.unlink(missing_ok=True)
        (self.config_dir / "elasticsearch.yml").write_text(self.elasticsearch_yml())
        options_d = self.config_dir / "jvm.options.d"
        options_d.mkdir(exist_ok=True)
        (options_d / "devservices.options").write_text(self.jvm_options())
        if self.settings.secure:
            self._prepare_security(jdk)
        writable = (self.config_dir, self.data_dir, self.logs_dir, self.tmp_dir)
        for directory in writable:
            directory.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if k not in _DROP_ENV}
        env.update(
            ES_JAVA_HOME=str(jdk),
            ES_PATH_CONF=str(self.config_dir),
            ES_TMPDIR=str(self.tmp_dir),
            ES_JAVA_OPTS=os.environ.get(
                "ES_JAVA_OPTS", CLUSTER_NODE_JAVA_OPTS if self.clustered else DEFAULT_ES_JAVA_OPTS
            ),
        )
        if run_as is not None:
            for directory in writable:
                chown_tree(directory, run_as)
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
        # Asked of this node: it answers only once it is part of a cluster with an elected master
        # (a node still looking for the others does not, within the probe's 3 s).
        url = f"{self.address}/_cluster/health?wait_for_status=yellow&timeout=1s"
        request = urllib.request.Request(url, headers=self._auth_header())
        try:
            with urllib.request.urlopen(request, timeout=3, context=self._ssl_context()) as resp:
                body = json.load(resp)
        except (urllib.error.URLError, OSError, ValueError):
            return False  # includes HTTP 408 (not yellow yet) and connection refused
        return body.get("status") in ("yellow", "green")

    def after_ready(self) -> None:
        if self.clustered:
            self.joined_stamp.write_text(CLUSTER_NAME + "\n")

    def hint(self) -> str:
        if not self.clustered:
            return (
                "see `python -m devservices logs elasticsearch`; to reset its data run "
                f"`python -m devservices down elasticsearch` and delete {self.data_dir}."
            )
        return (
            f"see `python -m devservices logs {self.name}` (a node waits for a majority of the "
            f"{self.settings.es_nodes} master-eligible nodes); to reset the cluster run "
            "`python -m devservices down elasticsearch` and delete every "
            f"{self.settings.state_dir}/elasticsearch-*/data."
        )


def node_name(settings: Settings, node: int) -> str:
    """``elasticsearch`` for the single node (its directory as it always was),
    ``elasticsearch-1``… else (also each node's node.name)."""
    return "elasticsearch" if settings.es_nodes == 1 else f"elasticsearch-{node + 1}"


def elasticsearch_nodes(settings: Settings) -> list[Elasticsearch]:
    return [Elasticsearch(settings, node) for node in range(settings.es_nodes)]
