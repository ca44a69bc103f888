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
