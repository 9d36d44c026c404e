"""Unit tests see no CDC_RECON_* variables: the test command exports the stack's."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CDC_RECON_"):
            monkeypatch.delenv(name)
