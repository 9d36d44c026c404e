"""Where replayed changes go (the applier, or a dry run) and where re-read rows come from."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

import sqlalchemy as sa

from cdc_recon.apply.applier import Applier
from cdc_recon.apply.preview import TargetPreview
from cdc_recon.apply.status import require_control_tables
from cdc_recon.batch import ApplyResult, Decoded, Failure
from cdc_recon.codecs import AvroDecoder
from cdc_recon.config import Settings, TableMapping
from cdc_recon.exceptions import ConfigError, UsageError
from cdc_recon.faults import crash_point
from cdc_recon.kafka.consumer import schema_registry_client
from cdc_recon.mariadb.connection import is_mariadb_url, parse_url
from cdc_recon.pg.engine import check_connection, create_engine
from cdc_recon.source_db.mariadb_rows import MariaDbRows
from cdc_recon.source_db.rows import SourceRows

RowReader = SourceRows | MariaDbRows  # the same three reads, per source engine


class Sink(Protocol):
    """Applies one batch (or says what applying it would do)."""

    @property
    def dry_run(self) -> bool: ...

    def apply(self, items: Sequence[Decoded | Failure]) -> ApplyResult: ...


class ApplySink:
    """The service's applier, with `next_offsets={}`: stored offsets stay untouched."""

    dry_run = False

    def __init__(self, applier: Applier, group_id: str) -> None:
        self._applier = applier
        self._group = group_id

    def apply(self, items: Sequence[Decoded | Failure]) -> ApplyResult:
        result = self._applier.apply(items, {}, self._group)
        crash_point("replay.batch")
        return result


class PreviewSink:
    """The dry run: classifies against the target's ledger and key_state, writes nothing."""

    dry_run = True

    def __init__(self, preview: TargetPreview) -> None:
        self._preview = preview

    def apply(self, items: Sequence[Decoded | Failure]) -> ApplyResult:
        return self._preview.apply(items)


@contextmanager
def target_sink(settings: Settings, *, dry_run: bool) -> Iterator[Sink]:
    """A sink on the target database, which must hold the control tables."""
    engine = create_engine(settings.target_url, name="target")
    try:
        check_connection(engine, name="target")
        require_control_tables(engine, settings.control_schema)
        if dry_run:
            yield PreviewSink(TargetPreview(engine, settings))
            return
        applier = Applier(engine, settings)
        try:
            applier.prepare()
            yield ApplySink(applier, settings.group_id)
        finally:
            applier.close()
    finally:
        engine.dispose()


@contextmanager
def source_reader(settings: Settings) -> Iterator[RowReader]:
    """The re-reader on the source database (PostgreSQL, or MariaDB for a mariadb://
    URL); `ConfigError` without a source."""
    if settings.source_url is None:
        raise ConfigError(
            "config: source_url: re-reading rows needs the source database", key="source_url"
        )
    url = settings.source_url.get_secret_value()
    if is_mariadb_url(url):
        yield MariaDbRows(parse_url(url))
        return
    engine: sa.Engine = create_engine(settings.source_url, name="source")
    try:
        check_connection(engine, name="source")
        yield SourceRows(engine)
    finally:
        engine.dispose()


def avro_decoder(settings: Settings) -> AvroDecoder | None:
    registry = settings.schema_registry_url
    return AvroDecoder(schema_registry_client(registry)) if registry else None


def select_tables(settings: Settings, tables: Sequence[str] | None) -> list[TableMapping]:
    """The mappings of `tables` (source names), or all; `UsageError` names an unmapped one."""
    if not tables:
        return list(settings.tables)
    unknown = [t for t in tables if settings.mapping_for(t) is None]
    if unknown:
        mapped = ", ".join(m.source for m in settings.tables) or "none"
        raise UsageError(
            f"not a mapped source table: {unknown[0]} (mapped: {mapped})", value=unknown[0]
        )
    return [m for m in settings.tables if m.source in tables]
