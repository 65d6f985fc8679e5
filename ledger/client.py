"""The agency client: sign a body with the agency's key and post it, retrying safely.

Retries after a timeout, a dropped connection or a 503 reuse the same signed body
and `event_id`, so the ledger records the event once and answers the retry with
the original receipt.
"""

from __future__ import annotations

import base64
import random
import time
from typing import Any

import httpx

from .errors import (
    HTTP_STATUS,
    LedgerError,
    SignatureError,
    StoreUnavailable,
    UsageError,
)
from .keys import Signer
from .narrative import sign_draft, wire

# The API's statuses back to the ledger's errors (the first class for a shared status),
# and what the HTTP layer itself refuses with: no token, body too large, not JSON.
ERRORS: dict[int, type[LedgerError]] = {
    **{status: cls for cls, status, _ in reversed(HTTP_STATUS) if status < 500},
    401: SignatureError,
    413: UsageError,
    415: UsageError,
}


class LedgerClient:
    def __init__(
        self,
        server: str,
        token: str,
        signer: Signer,
        timeout: float = 10.0,
        attempts: int = 8,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.http = _http(server, token, timeout, transport)
        self.signer = signer
        self.attempts = attempts

    def close(self) -> None:
        self.http.close()

    def signed(self, draft: dict[str, Any]) -> dict[str, Any]:
        """The request for a draft body: its narrative moved into commitments (version 2)
        and sent beside the signed body, never inside it."""
        signed = sign_draft(draft, self.signer)
        out: dict[str, Any] = {"body": signed.body, "sig": base64.b64encode(signed.sig).decode()}
        if signed.texts:
            out["narrative"] = wire(signed.texts)
        return out

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Post one event; the receipt, from the first try or a retry."""
        payload = self.signed(body)
        path = f"/v1/cases/{body['case_id']}/events"
        delay = 0.1
        for attempt in range(self.attempts):
            try:
                response = self.http.post(path, json=payload)
            except (httpx.TransportError, httpx.TimeoutException) as e:
                if attempt == self.attempts - 1:
                    raise StoreUnavailable(
                        f"cannot reach the ledger at {self.http.base_url}: {e}"
                    ) from None
            else:
                if response.status_code in (200, 201):
                    receipt: dict[str, Any] = response.json()
                    return receipt
                if response.status_code not in (429, 502, 503, 504):
                    raise _error(response)
                if attempt == self.attempts - 1:
                    raise _error(response)
            time.sleep(delay * (1 + random.random()))  # noqa: S311 - jitter, not security
            delay = min(delay * 2, 5.0)
        raise StoreUnavailable("gave up after retries")  # pragma: no cover - loop returns


def add_subject(
    server: str,
    token: str,
    subject: dict[str, Any],
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> str:
    """Hand a person's identity to a remote vault as an agency; their reference.

    Adding the same person again returns the same reference, so a retry is safe.
    """
    with _http(server, token, timeout, transport) as http:
        try:
            response = http.post("/v1/subjects", json=subject)
        except (httpx.TransportError, httpx.TimeoutException) as e:
            raise StoreUnavailable(f"cannot reach the ledger at {server}: {e}") from None
    if response.status_code != 201:
        raise _error(response)
    return str(response.json()["ref"])


def _http(
    server: str, token: str, timeout: float, transport: httpx.BaseTransport | None
) -> httpx.Client:
    return httpx.Client(
        base_url=server.rstrip("/"),
        timeout=timeout,
        headers={"Authorization": f"Bearer {token}"},
        transport=transport,
    )


def _error(response: httpx.Response) -> LedgerError:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    cls = ERRORS.get(response.status_code, StoreUnavailable)
    return cls(f"ledger refused ({response.status_code}): {detail}")
