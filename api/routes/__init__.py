"""One module per resource; routes translate HTTP to calls on `ledger` and back."""
