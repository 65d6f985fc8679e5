"""API bearer tokens: random 256-bit secrets, stored only as SHA-256 hashes.

A token is shown once, when issued. Each has a role (agency, panel, auditor,
admin) and, for agencies, the agency it may write as. Revocation is immediate.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from .canonical import format_recorded_at
from .errors import Conflict, NotFound, UsageError
from .logdb import LogDB

TOKEN_PREFIX = "rl_"  # noqa: S105 - a prefix that makes leaked tokens easy to spot


class Role(StrEnum):
    AGENCY = "agency"
    PANEL = "panel"
    AUDITOR = "auditor"
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """Who a request is from."""

    name: str
    role: Role
    agency: str | None = None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


LOOKUP_TTL_S = 2.0  # a revocation reaches other processes within this time


class _Flight:
    """One database lookup of a token, which every request for that token waits on
    meanwhile: when a kept answer expires under load, each agency's requests in
    flight would otherwise all query the database at once, one after another on
    its one connection."""

    __slots__ = ("done", "failed", "found", "generation")

    def __init__(self, generation: int) -> None:
        self.done = threading.Event()
        self.failed = False
        self.found: Principal | None = None
        self.generation = generation  # of revocations here when the lookup began


class TokenStore:
    def __init__(self, db: LogDB) -> None:
        self.db = db
        self._seen: dict[str, tuple[float, Principal | None]] = {}
        self._flights: dict[str, _Flight] = {}
        self._lock = threading.Lock()  # over the flights and the generation
        self._generation = 0  # revocations made through this store

    def issue(self, name: str, role: Role | str, agency: str | None = None) -> str:
        try:
            role = Role(role)
        except ValueError:
            raise UsageError(
                f"role {role!r} is not one of {', '.join(r.value for r in Role)}"
            ) from None
        if (role is Role.AGENCY) != (agency is not None):
            raise UsageError("agency tokens, and only they, name an agency")
        token = TOKEN_PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip(
            "="
        )
        with self.db.write() as cur:
            if cur.execute("SELECT 1 FROM api_tokens WHERE name = ?", (name,)).fetchone():
                raise Conflict(f"a token named {name!r} already exists")
            cur.execute(
                "INSERT INTO api_tokens VALUES (?, ?, ?, ?, ?, NULL)",
                (
                    token_hash(token),
                    name,
                    role.value,
                    agency,
                    format_recorded_at(datetime.now(UTC)),
                ),
            )
        return token

    def revoke(self, name: str) -> None:
        with self.db.write() as cur:
            row = cur.execute(
                "SELECT revoked_at FROM api_tokens WHERE name = ?", (name,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no token named {name!r}")
            if row[0] is not None:
                raise Conflict(f"token {name!r} was already revoked at {row[0]}")
            cur.execute(
                "UPDATE api_tokens SET revoked_at = ? WHERE name = ?",
                (format_recorded_at(datetime.now(UTC)), name),
            )
        with self._lock:  # takes effect in this process at once
            self._generation += 1
            self._seen.clear()
            # A lookup begun before the revocation answers only the requests already
            # waiting on it, which came before the revocation did.
            self._flights.clear()

    def lookup(self, token: str) -> Principal | None:
        """The principal a presented token stands for, or None (unknown or revoked).

        Answers are kept for two seconds, so a busy API does not query the database
        on every request; revocation in this process takes effect at once.
        """
        digest = token_hash(token)
        hit, found = self._kept(digest)
        if hit:
            return found
        with self._lock:
            flight = self._flights.get(digest)
            leads = flight is None
            if flight is None:
                flight = self._flights[digest] = _Flight(self._generation)
        if not leads:
            flight.done.wait()
            # A lookup that failed is tried again by each waiter, which answers
            # (or raises) for itself.
            return self._lookup(digest) if flight.failed else flight.found
        try:
            found = self._lookup(digest)
        except BaseException:
            flight.failed = True
            raise
        else:
            flight.found = found
            with self._lock:
                # An answer read before a revocation here committed is not kept:
                # the revocation would otherwise be undone for two seconds.
                if flight.generation == self._generation:
                    if len(self._seen) > 10_000:
                        self._seen.clear()
                    self._seen[digest] = (time.monotonic(), found)
        finally:
            with self._lock:
                if self._flights.get(digest) is flight:
                    del self._flights[digest]
            flight.done.set()
        return found

    def cached(self, token: str) -> tuple[bool, Principal | None]:
        """The answer kept from a lookup less than two seconds ago, if any: lets an
        async caller skip the thread a database lookup needs."""
        return self._kept(token_hash(token))

    def _kept(self, digest: str) -> tuple[bool, Principal | None]:
        seen = self._seen.get(digest)
        if seen is not None and time.monotonic() - seen[0] < LOOKUP_TTL_S:
            return True, seen[1]
        return False, None

    def _lookup(self, digest: str) -> Principal | None:
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT name, role, agency FROM api_tokens WHERE token_hash = ? AND "
                "revoked_at IS NULL",
                (digest,),
            ).fetchone()
        return None if row is None else Principal(str(row[0]), Role(row[1]), row[2])

    def list(self) -> list[dict[str, str | None]]:
        with self.db.read() as cur:
            return [
                {"name": r[0], "role": r[1], "agency": r[2], "created_at": r[3], "revoked_at": r[4]}
                for r in cur.execute(
                    "SELECT name, role, agency, created_at, revoked_at FROM api_tokens "
                    "ORDER BY name"
                ).fetchall()
            ]
