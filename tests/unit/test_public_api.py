from __future__ import annotations

import cdc_recon


def test_public_api_is_pinned() -> None:
    assert sorted(cdc_recon.__all__) == sorted(
        [
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
    )
    for name in cdc_recon.__all__:
        assert getattr(cdc_recon, name) is not None
