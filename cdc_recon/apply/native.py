"""The Rust COPY text encoders (`native/`, module `cdc_recon_native`), when installed.

`scripts/setup` builds them with cargo. They write the same text as the Python encoders
in `apply/encode.py` and `pg/sql.py`, which stay the reference (`tests/unit/apply/test_native.py`
holds the two equal), in about a fifth of the time: the service's thread spends about a
third of its time per event there. Without the module, or with `CDC_RECON_NATIVE=0`,
everything runs in Python, only slower.

The Rust `RowChecker` says, in one call per row, that the values of a row fit their
columns for the common kinds of column (`fit.native_kind`); where it is not sure, the
Python checks of `cdc_recon.fit` run and give the reason.

A batch holding something the Rust side does not write (a string with a lone
surrogate, say) raises `Unsupported` there and is encoded in Python instead.
"""

from __future__ import annotations

import decimal
import os
from typing import Any

from cdc_recon.events import MISSING
from cdc_recon.pg.sql import value_text


class _Never(Exception):
    """Stands for `Unsupported` when the module is absent: nothing raises it."""


ENCODER: Any = None
Unsupported: type[Exception] = _Never

if os.environ.get("CDC_RECON_NATIVE", "1") != "0":
    try:
        import cdc_recon_native
    except ImportError:
        pass
    else:
        ENCODER = cdc_recon_native.LineEncoder(MISSING, value_text, decimal.Decimal)
        Unsupported = cdc_recon_native.Unsupported


def row_checker(kinds: list[tuple[str, int] | None]) -> Any | None:
    """The Rust row checker for columns of these kinds (`fit.native_kind`); None without
    the module (the Python checks then run alone)."""
    if ENCODER is None:
        return None
    return cdc_recon_native.RowChecker(kinds, MISSING)


def describe() -> str:
    """Which encoders the applier uses, for logs and benchmarks."""
    return "native (Rust)" if ENCODER is not None else "Python"
