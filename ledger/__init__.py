"""Response Ledger core: tamper-evident, event-sourced record of responses to child-protection cases.

Nothing here imports the web layer (`api`); `ledger.verify` needs only the
standard library and `cryptography`.
"""
