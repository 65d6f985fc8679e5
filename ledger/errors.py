"""One hierarchy of ledger errors, so every interface maps each kind to one outcome.

The CLI turns a `UsageError` into exit 2 and any other `LedgerError` into exit 1;
the HTTP API maps each class to one status. Messages name the case, event and
field concerned, because an operator reading them must know what was refused.
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base class: a refusal the user can act on (never a bug)."""


class UsageError(LedgerError):
    """The request itself is malformed: bad option, bad URL, unparseable input."""


class ValidationError(LedgerError):
    """An event or payload breaks the schema or an append rule."""


class NotFound(LedgerError):
    """A named case, event, agency or key does not exist."""


class Conflict(LedgerError):
    """An event id was reused with a different body, or a concurrent write won."""


class NarrativeErased(Conflict):
    """New narrative for a case whose narrative was crypto-shredded."""

    def __init__(self, case_id: str, erased_at: str) -> None:
        super().__init__(
            f"the narrative of case {case_id} was erased at {erased_at}; "
            "no further narrative can be added to it"
        )
        self.case_id = case_id


class SignatureError(LedgerError):
    """A signature does not verify, or the key is unknown, revoked or not the signer's."""


class Forbidden(LedgerError):
    """The caller may not see this: e.g. an agency asking for identities it did not supply."""


class IntegrityError(LedgerError):
    """Stored data no longer matches what was hashed or signed."""


class DamagedRecord(IntegrityError):
    """A stored event cannot be read at all: its row was altered or damaged."""

    def __init__(self, where: str, why: object) -> None:
        super().__init__(
            f"stored event {where} cannot be read ({why}): the database has been altered "
            "or damaged; run 'ledger verify' to find every such event"
        )


class StoreUnavailable(LedgerError):
    """The database cannot be reached; nothing was written, so retrying is safe."""


class KeyFileError(LedgerError):
    """A key file is missing, unreadable, malformed or too widely readable."""


# Each error's HTTP status and problem kind: the API answers with them and the agency
# client maps statuses back to these classes. First match wins (NarrativeErased is a
# Conflict).
HTTP_STATUS: tuple[tuple[type[LedgerError], int, str], ...] = (
    (UsageError, 400, "bad-request"),
    (ValidationError, 422, "invalid-event"),
    (NotFound, 404, "not-found"),
    (Conflict, 409, "conflict"),
    (SignatureError, 403, "signature-refused"),
    (Forbidden, 403, "forbidden"),
    (StoreUnavailable, 503, "store-unavailable"),
    (KeyFileError, 500, "server-key"),
    (IntegrityError, 500, "integrity"),
)
