"""Response Ledger core: a tamper-evident, event-sourced record of child-protection responses.

Nothing here imports the web layer (`api`); `ledger.verify` needs only the
standard library and `cryptography`.
"""
