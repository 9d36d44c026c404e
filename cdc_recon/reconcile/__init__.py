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

All SQL lives in `cdc_recon.db.reconcile`.
"""
