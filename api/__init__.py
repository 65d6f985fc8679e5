"""HTTP API for agencies, panels and auditors (FastAPI); routes call into `ledger`, nothing more."""
