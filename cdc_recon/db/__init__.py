"""Everything that builds SQL: the target's rows, the ledger and the control tables."""
