"""Reconciliation: prove that the target equals the source, and repair it without loss.

    model        frozen values: RowImage, RowDiff, Finding, CheckResult
    diff         classify two sides' rows into missing / extra / mismatched (pure)
    segments     key-range splitting and bucket comparison for the bisection (pure)
    sampling     sample size with finite-population correction, error-rate interval (pure)
    tables       which tables, columns and keys are compared (from settings + catalogs)
    checksums    segment checksums inside each database, bisected down to exact keys
    checks       counts, rules, schema drift, integrity, temporal, sampling
    activity     ledger activity per table and bucket as features (pure)
    anomalies    `--check anomalies`: IsolationForest over the activity (`ml` extra)
    runner       `run_reconcile`: the checks of `cdc-recon reconcile`, persisted
    workers      the run's bounded threads, shared by tables and segments
    corrections  non-destructive fixes: dry run, compare-and-set apply, audit, export SQL
    review       the review queue of `cdc-recon review`
    scheduler    runbook-like jobs inside `cdc-recon run`
    metrics      Prometheus metrics of the checks

and their SQL, the only place it is built (a `_sql` module is the SQL half of the logic
module of the same stem):

    catalog      columns, types, nullability and key of a table, from pg_catalog
    expressions  normalised column expressions, row hashes, key predicates (pure)
    segment_sql  count-and-checksum of key ranges, split points, row fetches
    check_sql    counts by group, orphans, future timestamps, rule queries
    store        control tables: runs, findings, corrections (audit), review queue, jobs
    fixes        compare-and-set corrections and their audit images
    review_sql   the review queue's reads and resolutions
    activity_sql the ledger's changes per table and time bucket (anomaly check)

Identifiers come from the configuration and the catalog and are always quoted; values
are always bound parameters (pyformat, so that `--export-sql` can `mogrify` them).
"""
