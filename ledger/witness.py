"""A witness: remembers the last checkpoint it verified and cosigns only consistent growth.

Anyone holding an older checkpoint can catch a log that deleted or rewrote its
history, even if the operator re-signed everything: the new checkpoint cannot
be proved consistent with the old one. The witness keeps its state in a
directory (its key, the pinned log key, the last checkpoint) and refuses, with
both checkpoints as evidence, when consistency fails.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import files
from .checkpoint import (
    COSIGNATURE_V1,
    Checkpoint,
    NoteError,
    NoteVerifier,
    cosign,
    verify_checkpoint,
)
from .errors import IntegrityError, LedgerError, StoreUnavailable
from .keys import Signer, load_or_generate_key_file
from .log import ConsistencyProof
from .merkle import InvalidProof, verify_consistency
from .verify import b64decode


class LogSource(Protocol):
    """What a witness needs from a log, locally (VerifiableLog) or over HTTP (RemoteLog)."""

    def consistency(self, first: int, second: int) -> ConsistencyProof: ...
    def add_cosignature(self, size: int, witness: NoteVerifier, line: str) -> None: ...


class RemoteLog:
    """A ledger's log over its HTTP API (an auditor token)."""

    def __init__(self, server: str, token: str, transport: Any = None) -> None:
        import httpx

        self.http = httpx.Client(
            base_url=server.rstrip("/"),
            timeout=30,
            transport=transport,
            headers={"Authorization": f"Bearer {token}"},
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise StoreUnavailable(f"cannot reach the log at {self.http.base_url}: {e}") from None
        return self._check(response)

    def _check(self, response: Any) -> Any:
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise LedgerError(f"the log answered {response.status_code}: {detail}")
        return response

    def latest_checkpoint(self) -> str:
        return str(self._request("GET", "/v1/log/checkpoint").text)

    def consistency(self, first: int, second: int) -> ConsistencyProof:
        data = self._request(
            "GET", "/v1/log/proof/consistency", params={"first": first, "second": second}
        )
        try:
            body = data.json()
            return ConsistencyProof(
                first,
                second,
                [b64decode(h) for h in body["proof"]],
                b64decode(body["first_root"]),
                b64decode(body["second_root"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise IntegrityError(f"the log's consistency proof is malformed: {e!r}") from None

    def add_cosignature(self, size: int, witness: NoteVerifier, line: str) -> None:
        self._request(
            "POST",
            "/v1/log/cosignatures",
            json={"tree_size": size, "verifier_key": witness.encode(), "line": line},
        )

    def close(self) -> None:
        self.http.close()


class InconsistentLog(IntegrityError):
    """The log's new checkpoint does not extend the one this witness holds."""

    def __init__(self, reason: str, old_note: str, new_note: str) -> None:
        super().__init__(reason)
        self.old_note = old_note
        self.new_note = new_note


@dataclass(frozen=True)
class WitnessResult:
    size: int
    previous_size: int | None
    cosignature: str


@contextlib.contextmanager
def _exclusive(state_dir: Path) -> Iterator[None]:
    """One witness run at a time on a state directory: two at once would both check
    against the same held checkpoint and could cosign two different logs."""
    with open(state_dir / "lock", "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


class Witness:
    def __init__(self, state_dir: Path, name: str | None = None) -> None:
        self.dir = state_dir
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        key_path = self.dir / "witness.key"
        self.signer: Signer = load_or_generate_key_file(key_path)
        name_path = self.dir / "name"
        if name:
            files.replace(name_path, (name + "\n").encode())
        self.name = name_path.read_text().strip() if name_path.exists() else "witness.local/w1"

    @property
    def verifier(self) -> NoteVerifier:
        return NoteVerifier(self.name, COSIGNATURE_V1, self.signer.public_bytes)

    def pinned_log_key(self, offered: NoteVerifier | None) -> NoteVerifier:
        """The log key this witness trusts: pinned on first use, never silently changed."""
        path = self.dir / "log.vkey"
        with _exclusive(self.dir):  # two first runs offered different keys pin one
            if path.exists():
                pinned = NoteVerifier.parse(path.read_text())
                if offered is not None and offered != pinned:
                    raise LedgerError(
                        f"this witness is pinned to log key {pinned.encode()}, "
                        f"not {offered.encode()}"
                    )
                return pinned
            if offered is None:
                raise LedgerError("no log key pinned yet: pass --log-key")
            files.replace(path, (offered.encode() + "\n").encode())
            return offered

    def witness(self, log: LogSource, latest_note: str, log_key: NoteVerifier) -> WitnessResult:
        """Check `latest_note` against the stored checkpoint; cosign it if consistent."""
        try:
            new = verify_checkpoint(latest_note, log_key)
        except NoteError as e:
            raise IntegrityError(f"the log's checkpoint does not verify: {e}") from None
        state = self.dir / "checkpoint"
        previous: Checkpoint | None = None
        with _exclusive(self.dir):
            if state.exists():
                old_note = state.read_text()
                previous = verify_checkpoint(old_note, log_key)
                self._check_consistent(log, previous, new, old_note, latest_note)
            line = cosign(new.body(), self.name, self.signer.private_key, int(time.time()))
            # Held on disk before the cosignature leaves: a witness that crashed after
            # publishing it but before remembering would judge the next checkpoint
            # against the older one, and could then cosign a fork of what it signed.
            if previous is None or new.size > previous.size:
                files.replace(state, latest_note.encode())
        log.add_cosignature(new.size, self.verifier, line)
        return WitnessResult(new.size, previous.size if previous else None, line)

    @staticmethod
    def _check_consistent(
        log: LogSource, old: Checkpoint, new: Checkpoint, old_note: str, new_note: str
    ) -> None:
        if new.size < old.size:
            raise InconsistentLog(
                f"the log shrank from {old.size} to {new.size} events", old_note, new_note
            )
        if new.size == old.size:
            if new.root != old.root:
                raise InconsistentLog(
                    f"two different roots for the same size {new.size}", old_note, new_note
                )
            return
        try:
            proof = log.consistency(old.size, new.size)
            verify_consistency(old.size, new.size, proof.hashes, old.root, new.root)
        except (InvalidProof, LedgerError) as e:
            raise InconsistentLog(
                f"checkpoint at size {new.size} is not consistent with the one at size "
                f"{old.size} this witness holds: {e}",
                old_note,
                new_note,
            ) from None
