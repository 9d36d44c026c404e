"""The monitoring HTTP server of `cdc-recon run`: metrics, health, a JSON API, a status page.

See `cdc_recon.monitor.api` for the endpoints and `cdc_recon.monitor.server` for the server.
"""

from __future__ import annotations
