"""The local PostgreSQL: settings, the instance written for Dagster, and a real server started
on a free port in a throwaway DEVSERVICES_HOME (initdb, the dagster role, `select 1`, stop)."""

from __future__ import annotations

import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
import yaml

from devservices import service
from devservices.__main__ import main
from devservices.dagster_instance import POSTGRES_ENV, instance_config, write_instance
from devservices.dagster_processes import free_port
from devservices.errors import DevServicesError
from devservices.postgres import Postgres, find_pg_bin, read_or_create_secret
from devservices.process import pid_alive
from devservices.settings import Settings


def test_port_and_password_from_the_environment(tmp_path: Path) -> None:
    assert Settings.from_env({}).postgres_port == 5432
    settings = Settings.from_env(
        {"DEVSERVICES_HOME": str(tmp_path), "POSTGRES_PORT": "25433", "POSTGRES_PASSWORD": "pw"}
    )
    postgres = Postgres(settings)
    assert postgres.address == "postgresql://dagster@127.0.0.1:25433/dagster"
    assert postgres.dagster_password() == "pw"
    assert "pw" not in repr(settings)
    with pytest.raises(DevServicesError, match="POSTGRES_PORT"):
        Settings.from_env({"POSTGRES_PORT": "0"})


def test_without_a_password_the_message_says_how_to_get_one(tmp_path: Path) -> None:
    postgres = Postgres(Settings.from_env({"DEVSERVICES_HOME": str(tmp_path)}))
    with pytest.raises(DevServicesError, match="make services-up"):
        postgres.dagster_password()
    created = postgres.dagster_password(create=True)
    assert postgres.dagster_password() == created
    assert stat.S_IMODE(postgres.dagster_password_file.stat().st_mode) == 0o600


def test_generated_secrets_are_kept(tmp_path: Path) -> None:
    first = read_or_create_secret(tmp_path / "a")
    assert read_or_create_secret(tmp_path / "a") == first
    assert read_or_create_secret(tmp_path / "b") != first
    assert len(first) >= 32


def test_newest_server_binaries_are_found(tmp_path: Path) -> None:
    assert find_pg_bin(tmp_path) is None
    for version in ("9", "15", "16"):
        (tmp_path / version / "bin").mkdir(parents=True)
    (tmp_path / "15" / "bin" / "postgres").touch()
    assert find_pg_bin(tmp_path) == tmp_path / "15" / "bin"
    (tmp_path / "16" / "bin" / "postgres").touch()
    assert find_pg_bin(tmp_path) == tmp_path / "16" / "bin"


def test_instance_storage_choice(tmp_path: Path) -> None:
    sqlite_env = {"DAGSTER_STORAGE": "sqlite"}
    assert "storage" not in instance_config(sqlite_env)
    assert write_instance(tmp_path / "sqlite", sqlite_env) == sqlite_env
    assert "storage" not in yaml.safe_load((tmp_path / "sqlite" / "dagster.yaml").read_text())
    given = {name: f"v-{name}" for name in POSTGRES_ENV}
    assert write_instance(tmp_path / "pg", given) == {"DAGSTER_STORAGE": "postgres", **given}
    written = yaml.safe_load((tmp_path / "pg" / "dagster.yaml").read_text())
    assert written["storage"]["custom"]["config"]["postgres_db"]["password"] == {
        "env": "DAGSTER_POSTGRES_PASSWORD"
    }
    with pytest.raises(DevServicesError, match="DAGSTER_STORAGE"):
        instance_config({"DAGSTER_STORAGE": "mysql"})


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Not pytest's tmp_path: /tmp/pytest-of-root is 0700, and the server may run as another user.
    path = Path(tempfile.mkdtemp(prefix="devservices-pg-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_real_server_starts_answers_and_stops(
    state_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "DEVSERVICES_HOME": str(state_dir),
        "POSTGRES_PORT": str(free_port()),
        "DEVSERVICES_TIMEOUT": "60",
    }
    settings = Settings.from_env(env)
    postgres = Postgres(settings)
    try:
        service.up([postgres], settings.timeout)
        connection = postgres.connection()
        with (
            psycopg2.connect(
                host=connection.host,
                port=connection.port,
                user=connection.user,
                password=connection.password,
                dbname=connection.db_name,
                connect_timeout=5,
            ) as conn,
            conn.cursor() as cur,
        ):
            cur.execute("select 1, current_user, current_database()")
            assert cur.fetchone() == (1, "dagster", "dagster")
        conn.close()
        # A wrong password is refused: the server is not open to everyone on the machine.
        with pytest.raises(psycopg2.OperationalError, match="password"):
            psycopg2.connect(connection.url() + "?password=wrong&connect_timeout=5")
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(["status", "postgres"]) == 0
        out = capsys.readouterr().out
        assert connection.url() in out
        assert connection.password not in out
        # A second `up` finds it healthy and only re-checks the role and database.
        service.up([postgres], settings.timeout)
    finally:
        _, pid = service.health(postgres)
        service.down(postgres)
    assert pid is not None
    assert not pid_alive(pid)
    assert service.health(postgres) == ("down", None)
