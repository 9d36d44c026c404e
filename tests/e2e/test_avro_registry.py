"""Avro through a real schema registry: Debezium writes the Confluent wire format through
Apicurio's converter, registering each schema version in Apicurio Registry (started by
scripts/stack, scripts/stack.d/registry/), and cdc-recon reads the schemas from its
Confluent-compatible API.

The workload, with a source column added mid-stream (a new schema version of the
table's value), arrives row for row, exactly once, nothing quarantined. The registry
becomes unreachable while the new version is still unread (a proxy between cdc-recon
and the registry is cut): the service waits and retries, quarantines nothing, and
catches up once the registry answers again.
"""

from __future__ import annotations

import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from cdc_recon.codecs.avro import MAGIC
from tests.conftest import Database, Services
from tests.e2e.pipeline import Endpoints, Pipeline
from tests.e2e.processes import Stack, wait_until
from tests.e2e.proxy import TcpProxy

pytestmark = [pytest.mark.e2e, pytest.mark.integration]

CONVERTER = "io.apicurio.registry.utils.converter.AvroConverter"


def converter_settings(registry_v2: str) -> list[str]:
    """Connector settings: key and value through Apicurio's converter in the Confluent
    wire format (magic byte, 4-byte content id, no headers), schemas registered as they
    come; Avro-safe schema names (the topic prefix has a hyphen)."""
    settings = ["schema.name.adjustment.mode=avro", "field.name.adjustment.mode=avro"]
    for side in ("key", "value"):
        settings += [
            f"{side}.converter={CONVERTER}",
            f"{side}.converter.apicurio.registry.url={registry_v2}",
            f"{side}.converter.apicurio.registry.auto-register=true",
            f"{side}.converter.apicurio.registry.as-confluent=true",
            f"{side}.converter.apicurio.registry.use-id=contentId",
            f"{side}.converter.apicurio.registry.headers.enabled=false",
        ]
    return settings


@dataclass(frozen=True)
class AvroStack(Stack):
    """The shared stack, registering connectors with the Avro converter settings."""

    extra: tuple[str, ...] = ()

    def run(self, *args: str, check: bool = True, timeout: float = 180) -> str:
        if args[:2] == ("connector", "register"):
            at = args.index("--wait") if "--wait" in args else len(args)
            args = (*args[:at], *self.extra, *args[at:])
        return super().run(*args, check=check, timeout=timeout)


@pytest.fixture
def registry_url() -> str:
    url = os.environ.get("CDC_RECON_REGISTRY_URL")
    if not url:
        message = "no schema registry: scripts/stack up starts it (CDC_RECON_REGISTRY_URL)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return url


@pytest.fixture
def proxy(registry_url: str) -> Iterator[TcpProxy]:
    where = urllib.parse.urlsplit(registry_url)
    with TcpProxy((where.hostname or "127.0.0.1", where.port or 80)) as cut_able:
        yield cut_able


@pytest.fixture
def avro_pipeline(
    shared_stack: Stack,
    services: Services,
    source_db: Database,
    target_db: Database,
    registry_url: str,
    proxy: TcpProxy,
    tmp_path: Path,
) -> Iterator[Pipeline]:
    """A pipeline whose connector writes Avro and whose service reads the registry
    through `proxy`."""
    port = urllib.parse.urlsplit(registry_url).port
    v2 = registry_url.replace("/apis/ccompat/v6", "/apis/registry/v2")
    stack = AvroStack(shared_stack.env, tuple(converter_settings(v2)))
    endpoints = Endpoints(services.kafka_bootstrap, services.source_url, services.target_url)
    pipeline = Pipeline(stack, endpoints, source_db, target_db, tmp_path)
    pipeline.config = {
        **pipeline.config,
        "format": "avro",
        "schema_registry_url": registry_url.replace(f":{port}/", f":{proxy.port}/"),
    }
    try:
        yield pipeline.setup()
    finally:
        pipeline.close()


def registry_versions(registry_url: str, subject_part: str) -> dict[str, list[int]]:
    with urllib.request.urlopen(f"{registry_url}/subjects", timeout=10) as response:
        subjects = json.load(response)
    found = {}
    for subject in subjects:
        if subject_part in subject:
            quoted = urllib.parse.quote(subject, safe="")
            with urllib.request.urlopen(
                f"{registry_url}/subjects/{quoted}/versions", timeout=10
            ) as response:
                found[subject] = json.load(response)
    return found


def first_value_bytes(pipeline: Pipeline) -> bytes:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(pipeline.client_config(**{"group.id": "peek-avro"}))
    try:
        consumer.assign([TopicPartition(pipeline.topics[0], 0, 0)])
        message = wait_until(lambda: consumer.poll(0.5), "a message on the first topic", 60)
        return bytes(message.value() or b"")
    finally:
        consumer.close()


def source_sql(pipeline: Pipeline, *statements: str) -> None:
    with pipeline.source.engine.begin() as conn:
        for statement in statements:
            conn.execute(sa.text(statement.format(s=f'"{pipeline.source.schema}"')))


def test_avro_through_the_registry_with_a_new_version_and_an_outage(
    avro_pipeline: Pipeline, registry_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    pipeline = avro_pipeline
    service = pipeline.start_service()
    work = pipeline.workload(count=3000, rate=300, seed=7).start()
    wait_until(lambda: pipeline.ledger_count() > 300, "cdc-recon to apply Avro changes", 120)
    assert first_value_bytes(pipeline)[:1] == MAGIC  # the Confluent wire format

    proxy.cut()  # the registry is gone for cdc-recon; the new version is not read yet
    source_sql(
        pipeline,
        "ALTER TABLE {s}.accounts ADD COLUMN loyalty integer",
        "UPDATE {s}.accounts SET loyalty = id % 7 WHERE id % 3 = 0",
    )
    stalled = pipeline.ledger_count()
    wait_until(
        lambda: "schema registry" in service.stderr or not service.alive(),
        "the service to meet the unreachable registry",
        120,
    )
    assert service.alive(), service.stderr[-3000:]
    assert pipeline.failures() == [], "a registry outage is not the message's fault"
    proxy.restore()
    work.join()
    pipeline.wait_converged()

    assert pipeline.ledger_count() > stalled
    assert pipeline.failures() == []
    assert pipeline.diff().ok, pipeline.report()
    lost, unexpected = pipeline.exactly_once()
    assert not lost and not unexpected, (sorted(lost)[:5], sorted(unexpected)[:5])
    versions = registry_versions(registry_url, "accounts")
    values = [v for s, v in versions.items() if s.endswith("-value")]
    assert values and len(values[0]) >= 2, versions  # the added column: a new version
    assert service.stop() == 0, service.stderr[-3000:]
