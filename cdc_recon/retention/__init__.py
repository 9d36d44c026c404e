"""Retention: pruning the control tables so they stay bounded for months (promise P8).

policy    what is old enough, and how long Kafka can redeliver (pure, no I/O)
queries   the SQL: each table's rule, the chunked delete, the lock, `prune_state`
tasks     the `PruneTask` protocol, the tasks, `default_tasks` (where a task joins)
pruner    one round under the lock (`prune_once`), `PrunerThread`; the protocol
metrics   Prometheus counters of pruned rows and outcomes
status    `prune_state` for `cdc-recon status`
"""
