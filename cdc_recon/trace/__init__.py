"""The story of one row: every change of a key, the messages that carried it, what the
ledger, the quarantine, the sweeper and reconciliation made of it, and the current
source row beside the target row (`cdc-recon trace`, `GET /api/trace`)."""
