"""One module per resource; routes translate HTTP to calls on `ledger` and back."""

from typing import Any


def json_example(example: Any) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` for a 200 JSON body, so each route states only its example."""
    return {200: {"content": {"application/json": {"example": example}}}}
