"""`python -m cdc_recon.cli`, as the `cdc-recon` console script."""

from __future__ import annotations

import sys

from cdc_recon.cli.app import main

sys.exit(main())
