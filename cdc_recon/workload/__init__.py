"""A realistic source workload for end-to-end runs: schema, seeded plan, paced runner.

    $ cdc-recon workload schema --schema shop
    $ cdc-recon workload run --schema shop --rate 200 --duration 60 \\
          --mix insert=0.5,update=0.4,delete=0.1 --seed 7

`tables` defines the five tables (and their cdc-recon mappings and Debezium topics),
`values` and `planner` draw what to do from a seed without I/O, `runner` does it.
"""

from __future__ import annotations

from cdc_recon.exceptions import WorkloadError
from cdc_recon.workload.planner import Mix, Planner, StartState, Statement
from cdc_recon.workload.runner import Summary, WorkloadConfig, run_workload
from cdc_recon.workload.tables import (
    TABLES,
    Table,
    create_tables,
    include_list,
    table_mappings,
    topic_names,
)

__all__ = [
    "TABLES",
    "Mix",
    "Planner",
    "StartState",
    "Statement",
    "Summary",
    "Table",
    "WorkloadConfig",
    "WorkloadError",
    "create_tables",
    "include_list",
    "run_workload",
    "table_mappings",
    "topic_names",
]
