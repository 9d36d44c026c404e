"""What cdc_recon reads from or installs in the source database."""
