"""Fixtures of the integration tests beyond tests/conftest.py's services."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, Services
from tests.integration.deployment import Deployments


@pytest.fixture
def deployments(
    tmp_path: Path, services: Services, target_db: Database, topic_factory: Callable[..., str]
) -> Iterator[Deployments]:
    """`cdc-recon` deployments for this test (see `Deployments`); stopped at the end."""
    made = Deployments(tmp_path, services, target_db, topic_factory)
    yield made
    for deployment in made.made:
        deployment.stop_all()
