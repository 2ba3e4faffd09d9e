"""Secrets stay out of what people read, and run config cannot redirect the key or read files."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from arbitrage.clients.keepa_sources import KeepaError, KeepaHttpClient
from arbitrage.domain.keepa_parsing import read_asin_list
from arbitrage.domain.markets import parse_market_list
from arbitrage.domain.redaction import (
    has_credentials,
    preview,
    redact_url,
    scrub_url,
    secure_endpoint_problem,
)
from arbitrage.settings import DATA_DIR, Settings, SettingsError
from resources.keepa import KeepaResource

SECRET = "secret-value-4711"


def test_preview_shows_four_characters_and_the_length() -> None:
    assert preview("KEEPA_API_KEY=" + SECRET) == "'KEEP'… (31 characters)"
    assert preview("B00X") == "'B00X'"
    assert SECRET not in preview(SECRET)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:hunter2@es.example:9200", "https://user:***@es.example:9200"),
        ("http://user:hunter2@127.0.0.1:1/path?q=1", "http://user:***@127.0.0.1:1/path?q=1"),
        ("https://tok3n@es.example", "https://***@es.example"),
        ("http://127.0.0.1:9200", "http://127.0.0.1:9200"),
        ("http://[::1:9200", "***"),  # does not parse: could be anything
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "hunter2" not in redact_url(url)


def test_scrub_url_removes_the_password_wherever_it_is_quoted() -> None:
    url = "https://user:hunter2@es.example:9200"
    text = f"cannot reach {url} (auth hunter2 rejected)"
    assert (
        scrub_url(text, url) == "cannot reach https://user:***@es.example:9200 (auth *** rejected)"
    )
    assert has_credentials(url) and not has_credentials("http://127.0.0.1:9200")


@pytest.mark.parametrize(
    "url",
    ["https://api.keepa.com", "http://127.0.0.1:8080", "http://localhost:1", "http://[::1]:8080"],
)
def test_the_key_may_go_over_https_or_to_loopback(url: str) -> None:
    assert secure_endpoint_problem(url) is None
    assert Settings.from_env({"KEEPA_API_URL": url}).keepa_api_url == url


@pytest.mark.parametrize(
    "url", ["http://api.keepa.com", "http://10.0.0.5:8080", "ftp://x", "https://u:p@api.keepa.com"]
)
def test_an_insecure_keepa_url_in_the_environment_is_refused_naming_the_variable(url: str) -> None:
    with pytest.raises(SettingsError, match=r"^KEEPA_API_URL=") as caught:
        Settings.from_env({"KEEPA_API_URL": url})
    assert ":p@" not in str(caught.value)
    with pytest.raises(ValueError, match="base_url"):
        KeepaHttpClient("k", base_url=url)


def test_a_bad_asin_line_is_reported_by_number_and_preview_only() -> None:
    text = "B000000001\nKEEPA_API_KEY=" + SECRET + "\n\nB0TEST-004\n"
    asins, problems = read_asin_list(text)
    assert asins == ["B000000001"]
    assert problems == [
        "line 2: 'KEEP'… (31 characters) is not an ASIN (10 characters A-Z, 0-9)",
        "line 4: 'B0TE'… (10 characters) is not an ASIN (10 characters A-Z, 0-9)",
    ]


def test_an_unknown_market_is_not_echoed_whole() -> None:
    with pytest.raises(ValueError) as caught:
        parse_market_list("DE," + SECRET)
    assert SECRET.upper() not in str(caught.value)
    assert "'SECR'… (17 characters)" in str(caught.value)


# --------------------------------------------------------------------------- run config


@pytest.fixture
def data_subdir() -> Iterator[Path]:
    """A scratch directory under data/ (the only place run config may pick files from)."""
    path = DATA_DIR / f".test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    yield path
    shutil.rmtree(path)


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    path = tmp_path / ".env"
    path.write_text(f"KEEPA_API_KEY={SECRET}\n")
    return path


def keepa(monkeypatch: pytest.MonkeyPatch, **config: str) -> KeepaResource:
    """The resource as Dagster builds it: the environment's values, then run config on top."""
    for name in ("KEEPA_API_URL", "KEEPA_ASINS_FILE", "KEEPA_SAMPLE_FILE"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings.from_env()
    values = {
        "base_url": settings.keepa_api_url,
        "asins_file": str(settings.keepa_asins_file),
        "sample_path": str(settings.keepa_sample_file),
    }
    return KeepaResource(**{**values, **config})


def test_run_config_cannot_change_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    assert keepa(monkeypatch).api_url() == "https://api.keepa.com"
    with pytest.raises(KeepaError, match="base_url cannot be changed in run config"):
        keepa(monkeypatch, base_url="https://collector.example").api_url()


def test_run_config_may_pick_files_only_under_data(
    monkeypatch: pytest.MonkeyPatch, data_subdir: Path, env_file: Path
) -> None:
    (data_subdir / "few.txt").write_text("B000000001\n")
    (data_subdir / "out").symlink_to(env_file)
    relative = str((data_subdir / "few.txt").relative_to(DATA_DIR.parent))
    assert keepa(monkeypatch, asins_file=relative).tracked_asins() == (["B000000001"], [])
    refused = [
        str(env_file),
        "/proc/self/environ",
        "data/../README.md",
        str(data_subdir / ".." / ".." / "README.md"),
        str(data_subdir / "out"),  # a symlink out of data/
        SECRET,  # not echoed: a run config may point a field at a secret
    ]
    for chosen in refused:
        with pytest.raises(KeepaError) as caught:
            keepa(monkeypatch, asins_file=chosen).tracked_asins()
        assert "asins_file in run config may only name a file under" in str(caught.value)
        assert "KEEPA_ASINS_FILE" in str(caught.value)
        assert SECRET not in str(caught.value)
    with pytest.raises(KeepaError, match="sample_path in run config may only name a file under"):
        keepa(monkeypatch, source="sample", sample_path=str(env_file)).client(logging.getLogger())


def test_the_environment_may_name_any_asin_file(
    monkeypatch: pytest.MonkeyPatch, env_file: Path
) -> None:
    monkeypatch.setenv("KEEPA_ASINS_FILE", str(env_file))
    resource = KeepaResource(asins_file=str(env_file))
    asins, problems = resource.tracked_asins()
    assert asins == [] and problems == [
        "line 1: 'KEEP'… (31 characters) is not an ASIN (10 characters A-Z, 0-9)"
    ]


def test_a_binary_asin_file_fails_with_a_sentence_not_its_bytes(
    monkeypatch: pytest.MonkeyPatch, data_subdir: Path
) -> None:
    (data_subdir / "bin").write_bytes(b"\xff\xfe" + SECRET.encode())
    with pytest.raises(KeepaError, match="cannot be read as UTF-8 text") as caught:
        keepa(monkeypatch, asins_file=str(data_subdir / "bin")).tracked_asins()
    assert SECRET not in str(caught.value)


def test_unset_fields_mean_the_environment(monkeypatch: pytest.MonkeyPatch, env_file: Path) -> None:
    # Dagster drops the definitions' values once a run config names any field of the resource.
    monkeypatch.setenv("KEEPA_API_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("KEEPA_ASINS_FILE", str(env_file))
    resource = KeepaResource()
    assert resource.api_url() == "http://127.0.0.1:8080"
    assert resource.asins_path() == env_file
