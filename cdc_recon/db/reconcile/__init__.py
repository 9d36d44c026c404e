"""SQL of the reconciliation checks (`cdc_recon.reconcile`): the only place it is built.

    catalog      columns, types, nullability and key of a table, from pg_catalog
    expressions  normalised column expressions, row hashes, key predicates (pure)
    segments     count-and-checksum of key ranges, split points, row fetches
    checks       counts by group, orphans, future timestamps, rule queries
    store        control tables: runs, findings, corrections (audit), review queue, jobs
    fixes        compare-and-set corrections and their audit images
    activity     the ledger's changes per table and time bucket (anomaly check)

Identifiers come from the configuration and the catalog and are always quoted; values
are always bound parameters (pyformat, so that `--export-sql` can `mogrify` them).
"""
