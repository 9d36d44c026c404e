"""Configuration: one frozen settings object from a YAML file and `CDC_RECON_*` variables.

Precedence, highest first: keyword arguments, environment variables, the YAML file given
with `-c`, defaults. Nested settings take `__` in variable names
(`CDC_RECON_SERVICE__BATCH_SIZE=2000`); the three connection settings are top-level:
`CDC_RECON_KAFKA_BOOTSTRAP`, `CDC_RECON_SOURCE_URL`, `CDC_RECON_TARGET_URL`.

    >>> settings = load_settings("cdc-recon.yml")  # doctest: +SKIP
    >>> settings.masked()["target_url"]             # doctest: +SKIP
    'postgresql://app:***@db:5432/target'

Unknown keys are an error that names them; database URLs are `SecretStr` and are masked
whenever printed.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from cdc_recon.config.reconcile_settings import ReconcileSettings
from cdc_recon.config.retention_settings import KeyStateSettings, RetentionSettings
from cdc_recon.exceptions import ConfigError

_config_file: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "cdc_recon_config_file", default=None
)

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*(\.[A-Za-z_][A-Za-z0-9_$]*)?$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TableMapping(_Section):
    """One allowed source table and how its events become target rows (promise P7)."""

    source: str = Field(description="source table as schema.table (Debezium) or its name")
    target: str = Field(description="target table as schema.table")
    key: tuple[str, ...] = Field(min_length=1, description="key columns, in source names")
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    rename: dict[str, str] = Field(default_factory=dict)
    delete_mode: Literal["hard", "soft"] = "hard"
    soft_delete_column: str = "_deleted"
    on_new_column: Literal["add", "ignore", "quarantine"] = Field(
        "add",
        description="a source column the target lacks: add it to the target (the type "
        "from the message's schema), leave it out of the write, or quarantine the change",
    )
    connector: Literal["postgresql", "mysql", "plain"] | None = Field(
        None,
        description="the source family of this table's changes; others are quarantined "
        "(their positions do not order this family's). Default: plain with `format: plain`, "
        "else postgresql",
    )

    datetime_zone: str = Field(
        "UTC",
        description="the time zone a source time WITHOUT zone is read in when its target "
        "column is timestamptz: a MySQL/MariaDB DATETIME (Debezium sends its wall time) or "
        "a PostgreSQL timestamp; an IANA name such as Europe/Berlin",
    )

    @field_validator("datetime_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (an IANA name, e.g. UTC)") from exc
        return value

    def source_family(self, fmt: str) -> str:
        """The connector family this table's changes must come from (see `connector`)."""
        return self.connector or ("plain" if fmt == "plain" else "postgresql")

    @field_validator("target")
    @classmethod
    def _target_is_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value):
            raise ValueError(f"not a table identifier: {value!r}")
        return value

    @model_validator(mode="after")
    def _columns_consistent(self) -> TableMapping:
        if self.include and self.exclude:
            raise ValueError("give include or exclude, not both")
        dropped = set(self.exclude) & set(self.key)
        if dropped or (self.include and not set(self.key) <= set(self.include)):
            raise ValueError("key columns cannot be excluded")
        return self


class ServiceSettings(_Section):
    batch_size: int = Field(10_000, gt=0, description="max messages per applied batch")
    batch_bytes: int = Field(
        32 << 20, gt=0, description="about the most message bytes per batch (big rows: fewer)"
    )
    poll_timeout: float = Field(0.5, gt=0, description="seconds to wait for a batch")
    linger: float = Field(
        0.05, gt=0, description="seconds a partial batch waits for more messages (quiet stream)"
    )
    retry_initial: float = Field(0.5, gt=0, description="first backoff on a transient error")
    retry_max: float = Field(30.0, gt=0, description="longest backoff")


class SweeperSettings(_Section):
    """The window sweeper (`sweeper:`): which change log it reads and how often."""

    enabled: bool = Field(False, description="run the sweeper inside `cdc-recon run`")
    interval: float = Field(60.0, gt=0, description="seconds between sweeps")
    grace: float = Field(30.0, ge=0, description="seconds a window must be closed to be checked")
    window: float = Field(300.0, gt=0, description="max seconds of change log per sweep step")
    adapter: Literal["pg_trigger", "debezium_tx", "kafka_topic"] = "pg_trigger"
    changelog_schema: str = Field(
        "cdc_recon_source", description="schema of the trigger change log in the source"
    )
    retention: float = Field(7 * 86400.0, gt=0, description="seconds of change log kept")
    batch_size: int = Field(100_000, gt=0, description="rows per SQL batch")
    transaction_topic: str | None = Field(
        None, description="Debezium transaction-metadata topic (adapter debezium_tx)"
    )

    @field_validator("changelog_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if not _IDENTIFIER.match(value) or "." in value:
            raise ValueError(f"not a schema name: {value!r}")
        return value

    @model_validator(mode="after")
    def _adapter_complete(self) -> SweeperSettings:
        if self.adapter == "debezium_tx" and not self.transaction_topic:
            raise ValueError("adapter debezium_tx needs transaction_topic")
        return self


class LedgerSettings(_Section):
    """The ledger's partitions by source time (`ledger:`; `cdc_recon.apply.ledger`)."""

    partition: Literal["hour", "day", "week"] = Field(
        "day", description="source time one partition holds (UTC; weeks from Monday)"
    )
    retention: float = Field(
        7 * 86400.0, ge=0, description="seconds of source time kept behind now"
    )
    ahead: int = Field(3, ge=0, le=1000, description="partitions created after the current one")
    interval: float = Field(
        300.0, gt=0, description="seconds between maintenance runs in `cdc-recon run`"
    )
    lock_timeout: float = Field(
        1.0, gt=0, description="seconds a partition change waits for a lock, then retries later"
    )
    drop_unswept: bool = Field(
        False,
        description="drop partitions by age alone, before the sweeper passed them "
        "(only for deployments that run no sweeper: the dropped changes cannot be checked)",
    )


class MonitoringSettings(_Section):
    """The HTTP endpoint of `cdc-recon run` (`monitoring:`): metrics, health, API, status page.

    It listens on loopback unless told otherwise; any other address needs `token`, which
    every request but the health checks and the page's static files must then present as
    `Authorization: Bearer <token>`.
    """

    enabled: bool = Field(True, description="serve HTTP from `cdc-recon run`")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(9464, ge=0, le=65535, description="port to listen on (0: any free port)")
    token: SecretStr | None = Field(None, description="bearer token; required off loopback")
    refresh: float = Field(5.0, gt=0, description="seconds between status refreshes")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> MonitoringSettings:
        if not is_loopback(self.host) and not (self.token and self.token.get_secret_value()):
            raise ValueError(f"listening on {self.host} needs a token (monitoring.token)")
        return self


def is_loopback(host: str) -> bool:
    """True for `localhost` and 127.0.0.0/8 or ::1 addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything cdc_recon reads from its environment, validated and frozen."""

    model_config = SettingsConfigDict(
        env_prefix="CDC_RECON_",
        env_nested_delimiter="__",
        env_ignore_empty=True,
        extra="forbid",
        frozen=True,
    )

    kafka_bootstrap: str = "127.0.0.1:9092"
    source_url: SecretStr | None = None
    target_url: SecretStr = SecretStr("postgresql://127.0.0.1:5432/target")
    group_id: str = "cdc-recon"
    topics: tuple[str, ...] = ()
    dead_letter_topic: str = "cdc-recon.dead-letter"
    schema_registry_url: str | None = None
    format: Literal["auto", "debezium", "plain", "avro"] = "auto"
    control_schema: str = "cdc_recon"
    kafka: dict[str, str] = Field(
        default_factory=dict, description="extra librdkafka properties for clients"
    )
    tables: tuple[TableMapping, ...] = ()
    service: ServiceSettings = ServiceSettings()
    sweeper: SweeperSettings = SweeperSettings()
    ledger: LedgerSettings = LedgerSettings()
    reconcile: ReconcileSettings = ReconcileSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    retention: RetentionSettings = RetentionSettings()
    key_state: KeyStateSettings = KeyStateSettings()

    @classmethod
    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _FileSource(settings_cls))

    def masked(self) -> dict[str, Any]:
        """The settings as plain data, with passwords in URLs replaced by `***`."""
        data = self.model_dump(mode="json")
        for name in ("source_url", "target_url"):
            secret = getattr(self, name)
            data[name] = mask_url(secret.get_secret_value()) if secret else None
        if self.monitoring.token is not None:
            data["monitoring"]["token"] = "***"
        data["kafka"] = {
            k: ("***" if "password" in k or "secret" in k else v) for k, v in self.kafka.items()
        }
        return data

    def mapping_for(self, source_table: str) -> TableMapping | None:
        """The mapping of `source_table`, or None when it is not allowed."""
        for mapping in self.tables:
            if mapping.source == source_table:
                return mapping
        return None


class _FileSource(PydanticBaseSettingsSource):
    """Feeds the parsed YAML file (set by `load_settings`) to pydantic-settings."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_config_file.get() or {})


def mask_url(url: str) -> str:
    """`scheme://user:secret@host/db` → `scheme://user:***@host/db`."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Read the YAML file at `path` (if any) and the environment into `Settings`.

    Raises `ConfigError` naming the first bad or unknown key.
    """
    data = _read_yaml(Path(path)) if path else {}
    token = _config_file.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        raise ConfigError(f"config: {key}: {message}", key=key) from exc
    finally:
        _config_file.reset(token)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data
