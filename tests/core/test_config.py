"""Configuration: keywords win over the environment, which wins over the config file."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kitaru_core import configure
from kitaru_core._config import current_settings
from kitaru_core.errors import ConfigurationError


@pytest.fixture(autouse=True)
def _clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for variable in (
        "KITARU_STORE_URL",
        "KITARU_ARTIFACTS_URL",
        "KITARU_LEASE_DURATION_S",
        "KITARU_ALLOW_PICKLE",
    ):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("KITARU_CONFIG_FILE", str(tmp_path / "config.toml"))
    configure(reset=True)
    yield
    configure(reset=True)


def test_defaults_live_under_dot_kitaru(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    settings = current_settings()
    assert settings.resolved_store_url() == f"sqlite:///{tmp_path / '.kitaru' / 'kitaru.db'}"
    assert settings.resolved_artifacts_url() == str(tmp_path / ".kitaru" / "artifacts")
    assert settings.allow_pickle is False


def test_keyword_beats_environment_beats_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[kitaru]\nstore_url = "sqlite:///from-file.db"\nlease_duration_s = 12.5\nallow_pickle = true\n'
    )
    settings = current_settings()
    assert (settings.store_url, settings.lease_duration_s, settings.allow_pickle) == (
        "sqlite:///from-file.db",
        12.5,
        True,
    )
    monkeypatch.setenv("KITARU_STORE_URL", "sqlite:///from-env.db")
    monkeypatch.setenv("KITARU_LEASE_DURATION_S", "7")
    assert current_settings().store_url == "sqlite:///from-env.db"
    assert current_settings().lease_duration_s == 7.0
    configure(store_url="sqlite:///from-keyword.db")
    assert current_settings().store_url == "sqlite:///from-keyword.db"
    assert current_settings().lease_duration_s == 7.0


def test_bad_configuration_is_reported_clearly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="lease_duration_s must be positive seconds"):
        configure(lease_duration_s=0)
    monkeypatch.setenv("KITARU_ALLOW_PICKLE", "perhaps")
    with pytest.raises(ConfigurationError, match="allow_pickle got 'perhaps'"):
        current_settings()
    monkeypatch.delenv("KITARU_ALLOW_PICKLE")
    (tmp_path / "config.toml").write_text('[kitaru]\nstore_uri = "sqlite://"\n')
    with pytest.raises(ConfigurationError, match=r"unknown settings \['store_uri'\]"):
        current_settings()
    (tmp_path / "config.toml").write_text("[kitaru\n")
    with pytest.raises(ConfigurationError, match="Cannot read the config file"):
        current_settings()
    (tmp_path / "config.toml").unlink()


def _synchronous_of_a_store_connection(url: str) -> int:
    from kitaru_core._runtime import get_store

    with get_store().engine.connect() as connection:
        return int(connection.exec_driver_sql("PRAGMA synchronous").scalar() or -1)


def test_sqlite_synchronous_is_full_by_default_and_normal_when_asked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("KITARU_SQLITE_SYNCHRONOUS", raising=False)
    url = f"sqlite:///{tmp_path / 'kitaru.db'}"
    configure(store_url=url, artifacts_url=str(tmp_path / "artifacts"))
    assert current_settings().sqlite_synchronous == "full"
    assert _synchronous_of_a_store_connection(url) == 2  # FULL
    (tmp_path / "config.toml").write_text('[kitaru]\nsqlite_synchronous = "normal"\n', encoding="utf-8")
    assert current_settings().sqlite_synchronous == "normal"
    assert _synchronous_of_a_store_connection(url) == 1  # NORMAL: the cached store reopened its connections
    monkeypatch.setenv("KITARU_SQLITE_SYNCHRONOUS", "FULL")
    assert current_settings().sqlite_synchronous == "full"
    assert configure(sqlite_synchronous="normal").sqlite_synchronous == "normal"
    assert _synchronous_of_a_store_connection(url) == 1


def test_a_bad_sqlite_synchronous_mode_names_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r'"full".*"normal".*got \'off\''):
        configure(sqlite_synchronous="off")
    monkeypatch.setenv("KITARU_SQLITE_SYNCHRONOUS", "extra")
    with pytest.raises(ConfigurationError, match="got 'extra'"):
        current_settings()
    monkeypatch.delenv("KITARU_SQLITE_SYNCHRONOUS")
