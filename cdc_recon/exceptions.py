"""Every error cdc_recon raises on purpose derives from `CdcReconError`.

    CdcReconError
    ├── ConfigError                 bad or unknown configuration (names the key)
    ├── UsageError                  a bad command-line value, e.g. a time (names the value)
    ├── ConnectionFailed            a service cannot be reached
    │   ├── KafkaUnavailable
    │   └── DatabaseUnavailable
    ├── DecodeError                 a message cannot be decoded (carries Kafka coordinates)
    ├── MappingError                an event names a table or column the mapping does not allow
    │   ├── InvalidChange           a value does not fit its column, or the key disagrees
    │   └── NewColumns              columns the target lacks, to add (on_new_column: add)
    ├── ApplyError                  the target rejected a write
    │   └── TransientDatabaseError  worth retrying (connection lost, serialization failure)
    ├── SweepError                  a sweep could not read or record a window (names it)
    ├── SourceBusy                  source rows stayed locked too long to re-read (names the table)
    ├── JobsBusy                    too many replay jobs run already (the HTTP API answers 409)
    ├── RetentionError              pruning a control table failed (names the table)
    │   └── PruneBusy               a lock stayed held past `retention.lock_timeout`: retry later
    ├── WorkloadError               the source refused a workload statement (`cdc-recon workload`)
    └── StackError                  the local stack could not be started

Errors carry data (topic, partition, offset, table, key) so that the quarantine and the
CLI can report them without parsing messages. The CLI is the only place that turns them
into exit codes.
"""

from __future__ import annotations


class CdcReconError(Exception):
    """Root of cdc_recon's errors."""

    exit_code: int = 1


class ConfigError(CdcReconError):
    """The configuration is invalid; `key` names the offending setting when known."""

    exit_code = 2

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


class UsageError(CdcReconError):
    """A value given on the command line (or to a public entry point) is invalid."""

    exit_code = 2

    def __init__(self, message: str, *, value: str | None = None) -> None:
        super().__init__(message)
        self.value = value


class ConnectionFailed(CdcReconError):
    """A service cannot be reached."""

    exit_code = 3

    def __init__(self, message: str, *, service: str) -> None:
        super().__init__(message)
        self.service = service


class KafkaUnavailable(ConnectionFailed):
    def __init__(self, message: str) -> None:
        super().__init__(message, service="kafka")


class DatabaseUnavailable(ConnectionFailed):
    def __init__(self, message: str, *, service: str = "database") -> None:
        super().__init__(message, service=service)


class MessageError(CdcReconError):
    """Base for errors about one Kafka message; carries its coordinates."""

    def __init__(
        self,
        message: str,
        *,
        topic: str | None = None,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        super().__init__(message)
        self.topic = topic
        self.partition = partition
        self.offset = offset


class DecodeError(MessageError):
    """A message could not be decoded into a change event."""

    reason = "undecodable"


class MappingError(MessageError):
    """An event names a table (or column) that the configured mapping does not allow."""

    reason = "unmapped"

    def __init__(self, message: str, *, table: str | None = None, **coords: object) -> None:
        super().__init__(message, **coords)  # type: ignore[arg-type]
        self.table = table


class InvalidChange(MappingError):
    """A mapped event whose value does not fit its column exactly, whose message key
    disagrees with its row, or whose position family the table is not mapped for."""

    reason = "invalid"


class NewColumns(MappingError):
    """An event carries source columns its target table lacks, with `on_new_column: add`:
    the applier adds `columns` (target name, the source's Connect field schema or None)
    and maps the batch again. Quarantined as `unmapped` where nothing adds them."""

    def __init__(
        self, message: str, *, table: str, columns: list[tuple[str, dict[str, object] | None]]
    ) -> None:
        super().__init__(message, table=table)
        self.columns = columns


class ApplyError(CdcReconError):
    """The target database rejected a write."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class TransientDatabaseError(ApplyError):
    """A database error worth retrying: the connection dropped, a serialization failure."""


class SweepError(CdcReconError):
    """The sweeper could not read the source's change log or record its findings."""

    def __init__(self, message: str, *, window: str | None = None) -> None:
        super().__init__(message)
        self.window = window


class SourceBusy(CdcReconError):
    """Re-reading source rows waited too long for the transactions writing them: retry later."""

    exit_code = 3

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class RetentionError(CdcReconError):
    """Pruning a control table failed; `table` names it when known."""

    def __init__(self, message: str, *, table: str | None = None) -> None:
        super().__init__(message)
        self.table = table


class PruneBusy(RetentionError):
    """A delete waited `retention.lock_timeout` for a lock another transaction holds: the
    pruner gives up the round rather than keep the applier waiting behind it."""

    exit_code = 3


class JobsBusy(CdcReconError):
    """Too many replay jobs are running; try again when one finished."""


class WorkloadError(CdcReconError):
    """The source database refused a workload statement (not a lost connection)."""


class StackError(CdcReconError):
    """The local stack (scripts/stack) could not be started or read."""
