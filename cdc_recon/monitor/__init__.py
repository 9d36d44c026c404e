"""The monitoring HTTP server of `cdc-recon run`: metrics, health, a JSON API, a status page.

See `cdc_recon.http.api` for the endpoints and `cdc_recon.http.server` for the server.
"""

from __future__ import annotations
