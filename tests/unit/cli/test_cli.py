from __future__ import annotations

from pathlib import Path

import pytest

from cdc_recon import __version__
from cdc_recon.cli.app import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"cdc-recon {__version__}"


def test_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "config" in capsys.readouterr().out


def test_bad_config_is_one_line_with_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "c.yml"
    path.write_text("nope: 1\n")
    assert main(["-c", str(path), "config"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "cdc-recon: error: config: nope: unknown setting"


def test_config_masks_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yml"
    path.write_text("target_url: postgresql://u:hunter2@h/db\n")
    assert main(["-c", str(path), "config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and "u:***@h/db" in out
