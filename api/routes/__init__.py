"""One module per resource; routes translate HTTP to calls on `ledger` and back."""

from typing import Any


def json_example(example: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a JSON body, so each route states only its example."""
    return {status: {"content": {"application/json": {"example": example}}}}
