"""The settings: one frozen object read from a YAML file and `CDC_RECON_*` variables.

`settings` holds `Settings`, its sections and `load_settings`; `reconcile_settings` the
`reconcile:` section (checks, tables, rules, schedule).
"""

from __future__ import annotations

from cdc_recon.config.settings import (
    ServiceSettings,
    Settings,
    TableMapping,
    is_loopback,
    load_settings,
    mask_url,
)

__all__ = [
    "ServiceSettings",
    "Settings",
    "TableMapping",
    "is_loopback",
    "load_settings",
    "mask_url",
]
