"""The verifiable log: integrate events into the Merkle tree, sign checkpoints, serve proofs.

The integrator follows the eventsourcing notification log in order and gives
every event (agency, key and ledger events included) the next leaf index;
notification-id gaps are fine. Each integration step runs in one transaction
holding the single-integrator lock, storing the new leaves and every complete
subtree they finish, so a crash leaves the tree as it was before the step and
proofs cost O(log n) reads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .canonical import format_recorded_at
from .checkpoint import (
    COSIGNATURE_V1,
    ED25519,
    Checkpoint,
    NoteError,
    NoteVerifier,
    add_signature_lines,
    sign_note,
    verify_cosignature,
)
from .errors import IntegrityError, NotFound, UsageError
from .keys import Signer
from .logdb import DuplicateRow, LogDB, _Adapted
from .merkle import (
    CompactRange,
    consistency_proof,
    frontier_positions,
    inclusion_proof,
    leaf_hash,
    range_hash,
)
from .store import Store, stored_bytes, stored_int
from .verify import b64encode

PAGE = 10_000
# The columns of the leaf and node tables, as PostgreSQL types (see logdb.TABLES).
LEAF_COLUMNS = ("bigint", "bigint", "text", "bigint", "bytea", "bytea")
NODE_COLUMNS = ("integer", "bigint", "bytea")


def _hash_bytes(event_hash: str) -> bytes:
    try:
        raw = bytes.fromhex(event_hash)
    except ValueError:
        raise UsageError(f"event hash {event_hash!r} is not 64 hex digits") from None
    if len(raw) != 32:
        raise UsageError(f"event hash {event_hash!r} is not 64 hex digits")
    return raw


def _tail(cur: _Adapted) -> tuple[int, int]:
    """(tree size, last integrated notification id), from the newest leaf alone."""
    row = cur.execute(
        "SELECT leaf_index, notification_id FROM merkle_leaves ORDER BY leaf_index DESC LIMIT 1"
    ).fetchone()
    return (0, 0) if row is None else (int(row[0]) + 1, int(row[1]))


class StoredTree:
    """Complete-subtree hashes read from the node table (a `SubtreeSource`)."""

    def __init__(self, cur: _Adapted) -> None:
        self.cur = cur

    def subtree(self, level: int, index: int) -> bytes:
        if level == 0:  # leaf hashes live with the leaves
            row = self.cur.execute(
                "SELECT leaf_hash FROM merkle_leaves WHERE leaf_index = ?", (index,)
            ).fetchone()
        else:
            row = self.cur.execute(
                "SELECT hash FROM merkle_nodes WHERE level = ? AND idx = ?", (level, index)
            ).fetchone()
        if row is None:
            raise NotFound(f"tree node ({level}, {index}) is not stored")
        return bytes(row[0])


@dataclass(frozen=True)
class InclusionProof:
    leaf_index: int
    tree_size: int
    leaf_hash: bytes
    event_hash: str
    hashes: list[bytes]
    root: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "leaf_hash": b64encode(self.leaf_hash),
            "event_hash": self.event_hash,
            "proof": [b64encode(h) for h in self.hashes],
            "root": b64encode(self.root),
        }


@dataclass(frozen=True)
class ConsistencyProof:
    first: int
    second: int
    hashes: list[bytes]
    first_root: bytes
    second_root: bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "proof": [b64encode(h) for h in self.hashes],
            "first_root": b64encode(self.first_root),
            "second_root": b64encode(self.second_root),
        }


def log_verifier(origin: str, public_key: bytes) -> NoteVerifier:
    return NoteVerifier(origin, ED25519, public_key)


class VerifiableLog:
    """The Merkle log over one ledger store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db = LogDB(store.url)

    def close(self) -> None:
        self.db.close()

    # --- integration --------------------------------------------------------------
    def size(self) -> int:
        with self.db.read() as cur:
            return _tail(cur)[0]

    def integrate(self, limit: int = PAGE) -> int:
        """Integrate up to `limit` new events in one transaction; returns how many."""
        with self.db.write() as cur:
            size, last = _tail(cur)
            notifications = self.store.catalog.notifications_after(last, limit)
            if not notifications:
                return 0
            tree = StoredTree(cur)
            compact = CompactRange(
                size, [tree.subtree(lv, ix) for lv, ix in frontier_positions(size)]
            )
            leaves, nodes = [], []
            for n, (nid, oid, version, state) in enumerate(notifications):
                leaf = leaf_hash(state)
                leaves.append((size + n, nid, oid, version, hashlib.sha256(state).digest(), leaf))
                nodes.extend(compact.append(leaf)[1:])  # level 0 is the leaf row itself
            try:
                cur.insert_rows("merkle_leaves", LEAF_COLUMNS, leaves)
                cur.insert_rows("merkle_nodes", NODE_COLUMNS, nodes)
            except DuplicateRow:
                # The tables already hold a leaf or node past the newest stored leaf:
                # leaves were deleted after integration. Nothing is written over them.
                raise IntegrityError(
                    f"the stored Merkle log is damaged: it already holds a leaf or tree node "
                    f"beyond its newest leaf ({size - 1}), as if leaves were deleted after "
                    "integration; nothing was integrated. Run 'ledger verify'"
                ) from None
            return len(leaves)

    def integrate_all(self) -> int:
        total = 0
        while True:
            n = self.integrate()
            total += n
            if n < PAGE:
                return total

    # --- checkpoints ------------------------------------------------------------------
    def root(self, size: int) -> bytes:
        self._check_size(size)
        with self.db.read() as cur:
            return range_hash(StoredTree(cur), 0, size)

    def checkpoint(self, origin: str, signer: Signer) -> str:
        """Integrate everything, then sign and store a checkpoint at the new size."""
        self.integrate_all()
        with self.db.write() as cur:
            size = _tail(cur)[0]
            row = cur.execute(
                "SELECT note FROM log_checkpoints WHERE tree_size = ?", (size,)
            ).fetchone()
            if row is not None:
                return str(row[0])
            root = range_hash(StoredTree(cur), 0, size)
            note = sign_note(Checkpoint(origin, size, root).body(), origin, signer.private_key)
            cur.execute(
                "INSERT INTO log_checkpoints VALUES (?, ?, ?, ?)",
                (size, root, note, format_recorded_at(datetime.now(UTC))),
            )
            return note

    def latest_checkpoint(self, with_cosignatures: bool = True) -> str:
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT tree_size, note FROM log_checkpoints ORDER BY tree_size DESC LIMIT 1"
            ).fetchone()
            if row is None:
                raise NotFound("no checkpoint yet: run 'ledger log checkpoint'")
            note = str(row[1])
            if with_cosignatures:
                lines = [
                    str(r[0])
                    for r in cur.execute(
                        "SELECT line FROM log_cosignatures WHERE tree_size = ? ORDER BY witness",
                        (row[0],),
                    ).fetchall()
                ]
                note = add_signature_lines(note, lines)
            return note

    def note_at(self, size: int, with_cosignatures: bool = True) -> str:
        """The checkpoint at `size`, with the cosignatures witnesses have added to it."""
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT note FROM log_checkpoints WHERE tree_size = ?", (size,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no checkpoint at size {size}")
            lines = (
                []
                if not with_cosignatures
                else [
                    str(r[0])
                    for r in cur.execute(
                        "SELECT line FROM log_cosignatures WHERE tree_size = ? ORDER BY witness",
                        (size,),
                    ).fetchall()
                ]
            )
        return add_signature_lines(str(row[0]), lines)

    def checkpoints(self) -> list[tuple[int, bytes, str]]:
        with self.db.read() as cur:
            return [
                (stored_int(r[0]), stored_bytes(r[1]), str(r[2]))
                for r in cur.execute(
                    "SELECT tree_size, root, note FROM log_checkpoints ORDER BY tree_size"
                ).fetchall()
            ]

    def add_cosignature(self, size: int, witness: NoteVerifier, line: str) -> None:
        """Store a witness's cosignature, after checking it signs our checkpoint."""
        if witness.alg != COSIGNATURE_V1:
            raise UsageError("a cosignature verifier key has signature type 0x04")
        try:
            bare = self.note_at(size, with_cosignatures=False)
            verify_cosignature(add_signature_lines(bare, [line]), witness)
        except NoteError as e:
            raise UsageError(f"cosignature refused: {e}") from None
        with self.db.write() as cur:
            if (
                cur.execute("SELECT 1 FROM log_checkpoints WHERE tree_size = ?", (size,)).fetchone()
                is None
            ):
                raise NotFound(f"no checkpoint at size {size}")
            cur.execute(
                "DELETE FROM log_cosignatures WHERE tree_size = ? AND witness = ?",
                (size, witness.name),
            )
            cur.execute(
                "INSERT INTO log_cosignatures VALUES (?, ?, ?, ?, ?)",
                (size, witness.name, witness.encode(), line, format_recorded_at(datetime.now(UTC))),
            )

    def cosignatures(self) -> list[tuple[int, str, str, str]]:
        with self.db.read() as cur:
            return [
                (stored_int(r[0]), str(r[1]), str(r[2]), str(r[3]))
                for r in cur.execute(
                    "SELECT tree_size, witness, verifier_key, line FROM log_cosignatures "
                    "ORDER BY tree_size, witness"
                ).fetchall()
            ]

    # --- proofs ---------------------------------------------------------------------
    def _check_size(self, size: int) -> None:
        current = self.size()
        if not 0 <= size <= current:
            raise UsageError(f"tree size {size} is not between 0 and the log's size {current}")

    def leaf_index_of(self, event_hash: str) -> int:
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT leaf_index FROM merkle_leaves WHERE event_hash = ?",
                (_hash_bytes(event_hash),),
            ).fetchone()
        if row is None:
            raise NotFound(f"no integrated event with hash {event_hash}")
        return int(row[0])

    def inclusion(self, index: int, size: int | None = None) -> InclusionProof:
        size = self.size() if size is None else size
        self._check_size(size)
        if not 0 <= index < size:
            raise UsageError(f"leaf index {index} is not below tree size {size}")
        with self.db.read() as cur:
            tree = StoredTree(cur)
            row = cur.execute(
                "SELECT event_hash FROM merkle_leaves WHERE leaf_index = ?", (index,)
            ).fetchone()
            return InclusionProof(
                index,
                size,
                tree.subtree(0, index),
                bytes(row[0]).hex(),
                inclusion_proof(tree, index, size),
                range_hash(tree, 0, size),
            )

    def proofs_at(
        self, event_hashes: Sequence[str], size: int
    ) -> dict[str, tuple[int, list[bytes]]]:
        """Leaf index and inclusion proof at `size` of each of these events integrated
        below it, read in one transaction (a bundle asks for a case's worth at once)."""
        self._check_size(size)
        out: dict[str, tuple[int, list[bytes]]] = {}
        with self.db.read() as cur:
            tree = StoredTree(cur)
            for event_hash in event_hashes:
                row = cur.execute(
                    "SELECT leaf_index FROM merkle_leaves WHERE event_hash = ?",
                    (_hash_bytes(event_hash),),
                ).fetchone()
                if row is not None and int(row[0]) < size:
                    out[event_hash] = (int(row[0]), inclusion_proof(tree, int(row[0]), size))
        return out

    def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        """Integrated leaves [start, end) with the stored bytes each one hashes."""
        with self.db.read() as cur:
            rows = cur.execute(
                "SELECT leaf_index, notification_id, event_hash FROM merkle_leaves "
                "WHERE leaf_index >= ? AND leaf_index < ? ORDER BY leaf_index",
                (start, end),
            ).fetchall()
        if not rows:
            return []
        first, last = int(rows[0][1]), int(rows[-1][1])
        states = {
            n.id: bytes(n.state)
            for n in self.store.app.recorder.select_notifications(
                first, last - first + 1, stop=last
            )
        }
        return [
            {
                "leaf_index": int(r[0]),
                "event_hash": bytes(r[2]).hex(),
                "envelope": states[int(r[1])].decode("utf-8") if int(r[1]) in states else None,
            }
            for r in rows
        ]

    def consistency(self, first: int, second: int) -> ConsistencyProof:
        self._check_size(second)
        if not 1 <= first <= second:
            raise UsageError(f"need 1 <= first ({first}) <= second ({second})")
        with self.db.read() as cur:
            tree = StoredTree(cur)
            return ConsistencyProof(
                first,
                second,
                consistency_proof(tree, first, second),
                range_hash(tree, 0, first),
                range_hash(tree, 0, second),
            )
