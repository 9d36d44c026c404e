from __future__ import annotations

from pathlib import Path

import pytest

from cdc_recon.config import load_settings, mask_url
from cdc_recon.exceptions import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cdc-recon.yml"
    path.write_text(text)
    return path


def test_yaml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(
        tmp_path,
        "kafka_bootstrap: file:9092\ngroup_id: from-file\nservice:\n  batch_size: 10\n",
    )
    monkeypatch.setenv("CDC_RECON_KAFKA_BOOTSTRAP", "env:9092")
    monkeypatch.setenv("CDC_RECON_SERVICE__POLL_TIMEOUT", "2.5")
    settings = load_settings(path)
    assert settings.kafka_bootstrap == "env:9092"
    assert settings.group_id == "from-file"
    assert settings.service.batch_size == 10
    assert settings.service.poll_timeout == 2.5


def test_unknown_key_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="service.batchsize") as info:
        load_settings(write(tmp_path, "service:\n  batchsize: 3\n"))
    assert info.value.key == "service.batchsize"


def test_bad_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="tables.0.key"):
        load_settings(write(tmp_path, "tables:\n  - {source: a, target: b, key: []}\n"))


def test_target_must_be_an_identifier(tmp_path: Path) -> None:
    bad = 'tables:\n  - {source: a, target: "x; DROP TABLE y", key: [id]}\n'
    with pytest.raises(ConfigError, match="tables.0.target"):
        load_settings(write(tmp_path, bad))


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yml")


def test_secrets_are_masked(tmp_path: Path) -> None:
    settings = load_settings(
        write(tmp_path, "target_url: postgresql://app:s3cret@db:5432/target\n")
    )
    assert "s3cret" not in repr(settings)
    assert settings.masked()["target_url"] == "postgresql://app:***@db:5432/target"
    assert mask_url("postgresql://db/target") == "postgresql://db/target"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.group_id = "other"  # type: ignore[misc]
