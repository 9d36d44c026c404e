"""cdc_recon: a Kafka CDC stream reconciler.

Applies change events to a target database exactly once in effect, keeps a ledger of
every applied change, finds the changes that never arrived and replays them.

    >>> from cdc_recon import load_settings
    >>> settings = load_settings("cdc-recon.yml")  # doctest: +SKIP
"""

from __future__ import annotations

from cdc_recon.config import Settings, load_settings
from cdc_recon.exceptions import (
    ApplyError,
    CdcReconError,
    ConfigError,
    ConnectionFailed,
    DatabaseUnavailable,
    DecodeError,
    KafkaUnavailable,
    MappingError,
    TransientDatabaseError,
)

__version__ = "0.1.0"

__all__ = [
    "ApplyError",
    "CdcReconError",
    "ConfigError",
    "ConnectionFailed",
    "DatabaseUnavailable",
    "DecodeError",
    "KafkaUnavailable",
    "MappingError",
    "Settings",
    "TransientDatabaseError",
    "__version__",
    "load_settings",
]
