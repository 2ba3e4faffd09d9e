"""PostgreSQL for the Dagster instance, from Debian's server binaries (package `postgresql`).

Layout under .devservices/postgres/: `data/` is the cluster (initdb), owned by the user the
server runs as; `superuser.password` (the `postgres` role, used only by devservices),
`dagster.password` (the `dagster` role, unless POSTGRES_PASSWORD is set) and `pgpass` (for psql)
are generated once, mode 0600. The server listens on 127.0.0.1 only, with no Unix socket, and
every login needs its password (scram-sha-256): other users of a shared machine cannot get in.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devservices.errors import DevServicesError
from devservices.process import RunAs, port_open
from devservices.report import log
from devservices.service import LaunchSpec, Service
from devservices.settings import Settings
from devservices.users import check_reachable, chown_tree, ensure_system_user

PG_LIB = Path("/usr/lib/postgresql")
PG_USER = "arbitrage-pg"
SUPERUSER = "postgres"
DAGSTER_ROLE = "dagster"
DAGSTER_DB = "dagster"
# Debian creates (and may start) a cluster "main" on 5432 when the package is installed; on a
# machine without postgresql-common yet, say no to that first: ours is the only one we want.
CREATECLUSTER_CONF = Path("/etc/postgresql-common/createcluster.conf")


@dataclass(frozen=True)
class Connection:
    """How the `dagster` role reaches its database."""

    host: str
    port: int
    user: str
    password: str
    db_name: str

    def url(self, *, with_password: bool = False) -> str:
        userinfo = f"{self.user}:{self.password}" if with_password else self.user
        return f"postgresql://{userinfo}@{self.host}:{self.port}/{self.db_name}"


def find_pg_bin(root: Path = PG_LIB) -> Path | None:
    """The newest /usr/lib/postgresql/<major>/bin holding a server, or None."""
    found = [
        entry / "bin"
        for entry in (root.iterdir() if root.is_dir() else [])
        if entry.name.isdigit() and (entry / "bin" / "postgres").is_file()
    ]
    return max(found, key=lambda path: int(path.parent.name), default=None)


def install_postgres() -> Path:
    """apt-get install Debian's server when we are root (CI, fresh containers); else say how."""
    apt_get = shutil.which("apt-get")
    if os.geteuid() != 0 or apt_get is None:
        raise DevServicesError(
            f"PostgreSQL's server is not installed (looked in {PG_LIB}/<version>/bin); install "
            "Debian's package (`sudo apt-get install -y postgresql`) and run this again."
        )
    log.info("postgres: installing Debian's postgresql package (apt-get)")
    if not CREATECLUSTER_CONF.exists():
        CREATECLUSTER_CONF.parent.mkdir(parents=True, exist_ok=True)
        CREATECLUSTER_CONF.write_text(
            "# Written by arbitrage's devservices before installing postgresql: no default\n"
            "# cluster; the project runs its own server in .devservices/postgres.\n"
            "create_main_cluster = false\n"
        )
    command = [
        apt_get,
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "-o",
        "Dpkg::Options::=--force-confold",  # keep the createcluster.conf written above
        "postgresql",
    ]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:  # a fresh image has no package lists yet: update once, retry
        subprocess.run([apt_get, "update", "-q"], capture_output=True, env=env, check=False)
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    bin_dir = find_pg_bin()
    if proc.returncode != 0 or bin_dir is None:
        raise DevServicesError(
            "`apt-get install postgresql` failed; install it yourself and run this again.",
            details=(proc.stdout + proc.stderr).strip()[-3000:],
        )
    return bin_dir


def read_or_create_secret(path: Path) -> str:
    """A generated password kept in a 0600 file: created once, then read."""
    with contextlib.suppress(FileNotFoundError):
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(24)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    return secret


def _psycopg2() -> Any:
    try:
        import psycopg2
    except ImportError as exc:
        raise DevServicesError(
            f"psycopg2 is not importable from {sys.executable} but is needed to set up "
            "PostgreSQL; run devservices with the repo's .venv/bin/python (`make venv`)."
        ) from exc
    return psycopg2


class Postgres(Service):
    name = "postgres"
    has_secure_mode = False  # the same server either way (Dagster's storage, on loopback)
    # SIGINT is PostgreSQL's "fast" shutdown; SIGTERM ("smart") would wait for every client,
    # and the Dagster processes keep pooled connections open.
    stop_signal = signal.SIGINT

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def superuser_password_file(self) -> Path:
        return self.home / "superuser.password"

    @property
    def dagster_password_file(self) -> Path:
        return self.home / "dagster.password"

    @property
    def pgpass_file(self) -> Path:
        return self.home / "pgpass"

    @property
    def main_log(self) -> Path:
        return self.console_log  # the server logs to stderr, which start_process keeps here

    def failure_log_files(self) -> list[Path]:
        return [self.console_log]

    def ports(self) -> list[tuple[int, str]]:
        return [(self.settings.postgres_port, "POSTGRES_PORT")]

    def dagster_password(self, *, create: bool = False) -> str:
        """POSTGRES_PASSWORD if set, else the generated one (made by `up`, read by the rest)."""
        if self.settings.postgres_password:
            return self.settings.postgres_password
        if create:
            return read_or_create_secret(self.dagster_password_file)
        try:
            return self.dagster_password_file.read_text().strip()
        except FileNotFoundError:
            raise DevServicesError(
                f"no password for PostgreSQL's {DAGSTER_ROLE} role yet "
                f"({self.dagster_password_file}); start it with `make services-up` or set "
                "POSTGRES_PASSWORD."
            ) from None

    def connection(self, db_name: str = DAGSTER_DB) -> Connection:
        return Connection(
            self.settings.host,
            self.settings.postgres_port,
            DAGSTER_ROLE,
            self.dagster_password(),
            db_name,
        )

    @property
    def address(self) -> str:
        # No password in what is printed; psql finds it in pgpass (see status_hint).
        s = self.settings
        return f"postgresql://{DAGSTER_ROLE}@{s.host}:{s.postgres_port}/{DAGSTER_DB}"

    def status_hint(self) -> str | None:
        return f"psql: PGPASSFILE={self.pgpass_file} psql {self.address}"

    def _initdb(self, bin_dir: Path, run_as: RunAs | None) -> None:
        version_file = self.data_dir / "PG_VERSION"
        if version_file.is_file():
            have, want = version_file.read_text().strip(), bin_dir.parent.name
            if have != want:
                raise DevServicesError(
                    f"{self.data_dir} holds a PostgreSQL {have} cluster but the server found is "
                    f"{want} ({bin_dir}); run `python -m devservices down postgres` and delete "
                    f"{self.data_dir} (Dagster's run history goes with it)."
                )
            return
        log.info("postgres: initdb into %s", self.data_dir)
        shutil.rmtree(self.data_dir, ignore_errors=True)  # a half-done earlier attempt
        self.data_dir.mkdir(mode=0o700, parents=True)
        # initdb runs as the server's user, so it must be able to read the superuser password.
        pwfile = self.data_dir.parent / "initdb.pw"
        pwfile.unlink(missing_ok=True)
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(read_or_create_secret(self.superuser_password_file) + "\n")
        if run_as is not None:
            os.chown(pwfile, run_as.uid, run_as.gid)
            chown_tree(self.data_dir, run_as)
        argv = [
            str(bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            # Passwords over TCP; no Unix socket is opened (see prepare), so no peer logins.
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",  # independent of the machine's locales
            "--no-instructions",
        ]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                cwd=self.home,
                check=False,
                user=run_as.uid if run_as else None,
                group=run_as.gid if run_as else None,
                extra_groups=[] if run_as else None,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise DevServicesError(
                f"initdb failed (exit {proc.returncode}); see its output below.",
                details=(proc.stdout + proc.stderr).strip(),
            )

    def prepare(self) -> LaunchSpec:
        bin_dir = find_pg_bin() or install_postgres()
        _psycopg2()  # fail now, not after the server has started, if the readiness probe can't run
        run_as = ensure_system_user(PG_USER, "PostgreSQL")
        self.home.mkdir(parents=True, exist_ok=True)
        if run_as is not None:
            check_reachable(self.home, run_as, PG_USER, "PostgreSQL", "DEVSERVICES_HOME")
        self._initdb(bin_dir, run_as)
        self.dagster_password(create=True)
        s = self.settings
        argv = [
            str(bin_dir / "postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(s.postgres_port),
            "-c",
            f"listen_addresses={s.host}",
            "-c",
            "unix_socket_directories=",  # none: the default /var/run/postgresql may not be ours
            "-c",
            "logging_collector=off",
        ]
        # libpq variables of the caller (PGDATA, PGPORT…) must not steer our server.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C")
        return LaunchSpec(argv=argv, env=env, cwd=self.home, run_as=run_as)

    @contextlib.contextmanager
    def _superuser(self) -> Iterator[Any]:
        psycopg2 = _psycopg2()
        conn = psycopg2.connect(
            host=self.settings.host,
            port=self.settings.postgres_port,
            user=SUPERUSER,
            password=self.superuser_password_file.read_text().strip(),
            dbname="postgres",
            connect_timeout=2,
        )
        conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
        try:
            yield conn
        finally:
            conn.close()

    def is_healthy(self) -> bool:
        if not port_open(self.settings.host, self.settings.postgres_port):
            return False
        psycopg2 = _psycopg2()
        try:
            with self._superuser() as conn, conn.cursor() as cur:
                cur.execute("select 1")
                return bool(cur.fetchone() == (1,))
        except (psycopg2.Error, OSError):
            return False  # starting up, or shutting down

    def after_ready(self) -> None:
        """The `dagster` role (its password follows POSTGRES_PASSWORD) and its database."""
        psycopg2 = _psycopg2()
        from psycopg2 import sql

        password = self.dagster_password(create=True)
        role = sql.Identifier(DAGSTER_ROLE)
        try:
            with self._superuser() as conn, conn.cursor() as cur:
                cur.execute("select 1 from pg_roles where rolname = %s", (DAGSTER_ROLE,))
                verb = sql.SQL("alter" if cur.fetchone() else "create")
                # CREATEDB: the tests give every Dagster instance a throwaway database.
                cur.execute(
                    sql.SQL("{} role {} with login createdb password %s").format(verb, role),
                    (password,),
                )
                cur.execute("select 1 from pg_database where datname = %s", (DAGSTER_DB,))
                if cur.fetchone() is None:
                    log.info("postgres: creating database %s", DAGSTER_DB)
                    cur.execute(
                        sql.SQL("create database {} owner {}").format(
                            sql.Identifier(DAGSTER_DB), role
                        )
                    )
        except psycopg2.Error as exc:
            raise DevServicesError(
                f"setting up PostgreSQL's {DAGSTER_ROLE} role failed: {exc}; {self.hint()}"
            ) from exc
        s = self.settings
        self.pgpass_file.unlink(missing_ok=True)
        fd = os.open(self.pgpass_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{s.host}:{s.postgres_port}:*:{DAGSTER_ROLE}:{password}\n")

    def hint(self) -> str:
        return (
            "see `python -m devservices logs postgres`; to start from scratch run "
            f"`python -m devservices down postgres` and delete {self.data_dir}."
        )


@contextlib.contextmanager
def dagster_cursor(settings: Settings, db_name: str = DAGSTER_DB) -> Iterator[Any]:
    """An autocommit cursor of the `dagster` role (tests, the throwaway databases)."""
    conn_info = Postgres(settings).connection(db_name)
    conn = _psycopg2().connect(
        host=conn_info.host,
        port=conn_info.port,
        user=conn_info.user,
        password=conn_info.password,
        dbname=conn_info.db_name,
        connect_timeout=5,
    )
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            yield cur
    finally:
        conn.close()


@contextlib.contextmanager
def throwaway_database(settings: Settings, prefix: str = "dagster_test") -> Iterator[str]:
    """A fresh database owned by `dagster`, dropped (connections and all) afterwards."""
    from psycopg2 import sql

    name = f"{prefix}_{secrets.token_hex(4)}"
    with dagster_cursor(settings) as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        drop = sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name))
        # An autovacuum worker on the database (after a test's burst of writes) is a process the
        # `dagster` role may not terminate: the drop fails until it is done, which takes moments.
        for attempt in range(20):
            try:
                with dagster_cursor(settings) as cur:
                    cur.execute(drop)
                break
            except _psycopg2().errors.InsufficientPrivilege:
                if attempt == 19:
                    raise
                time.sleep(0.5)
