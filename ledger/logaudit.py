"""The Merkle part of `ledger verify`: recompute the log from the stored events.

Streams the notification log, the stored leaves and the stored tree nodes side by
side, so memory stays flat: each integrated leaf must still be the same event,
each stored node must equal the recomputed one, and every stored checkpoint must
be signed by the log key and sign the root the events give at its size (which
also makes every later checkpoint consistent with every earlier one).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .checkpoint import NoteError, NoteVerifier, verify_checkpoint, verify_cosignature
from .log import VerifiableLog
from .merkle import EMPTY_ROOT, CompactRange, leaf_hash
from .store import Store, stored_bytes, stored_int
from .verify import b64encode

Report = Callable[[int, str, int, str | None, str], None]  # order, stream, seq, event, message
PAGE = 2000
# A signed checkpoint kept outside the database (by an auditor, a panel's bundle, a
# witness): what it is called in messages, and the signed note.
Anchor = tuple[str, str]


class LogAuditor:
    def __init__(
        self,
        store: Store,
        log: VerifiableLog,
        verifier: NoteVerifier,
        name_of: Callable[[str], str],
        report: Report,
        anchors: Sequence[Anchor] = (),
    ) -> None:
        self.store = store
        self.log = log
        self.verifier = verifier
        self.name_of = name_of  # originator id (hex) -> stream name, for messages
        self.report = report
        self.anchors = anchors
        self.leaves = 0
        self.checkpoints = 0
        self.anchors_checked = 0

    def _where(self, oid: str, seq: int) -> str:
        return f"{self.name_of(oid)} seq {seq}"

    def _notifications(self) -> Iterator[tuple[int, str, int, bytes]]:
        """(notification id, originator hex, version, stored bytes) in log order, read
        raw: the rows the integrator read, without an eventsourcing object per row."""
        last = 0
        while True:
            page = self.store.catalog.notifications_after(last, PAGE)
            yield from page
            if len(page) < PAGE:
                return
            last = page[-1][0]

    def _stored(self, sql: str, kinds: str) -> Iterator[tuple[Any, ...]]:
        """Rows of the log's own tables, each column made the kind it should be (`i`
        int, `b` bytes, `s` text) whatever an edit left there: verify reports a
        garbled row as a mismatch instead of failing on it."""
        convert: dict[str, Callable[[Any], Any]] = {"i": stored_int, "b": stored_bytes, "s": str}
        # Nearly every row is already so: one comparison of its column types passes it.
        kind_types = tuple({"i": int, "b": bytes, "s": str}[k] for k in kinds)
        for row in self.log.db.stream(sql):
            if tuple(map(type, row)) == kind_types:
                yield tuple(row)
            else:
                yield tuple(convert[k](v) for k, v in zip(kinds, row, strict=True))

    def run(self) -> None:
        # Every signed root the events must give at its size: the stored checkpoints
        # (name None) and those held outside the database, which whoever holds the
        # database and the log key cannot rewrite.
        signed: dict[int, list[tuple[str | None, bytes]]] = {}
        for name, size, root in [
            *((None, size, root) for size, root in self._checked_checkpoints()),
            *self._checked_anchors(),
        ]:
            signed.setdefault(size, []).append((name, root))
        for name, root in signed.pop(0, []):  # the empty tree: no leaf to wait for
            if root != EMPTY_ROOT:
                self._root_differs(name, 0, root, EMPTY_ROOT)
        stored_leaves = self._stored(
            "SELECT leaf_index, notification_id, originator_id, seq, event_hash, leaf_hash "
            "FROM merkle_leaves ORDER BY leaf_index",
            "iisibb",
        )
        stored_nodes = self._stored(
            "SELECT level, idx, hash FROM merkle_nodes ORDER BY ((idx + 1) << level), level",
            "iib",
        )
        compact = CompactRange()
        pending_leaf = next(stored_leaves, None)
        node_mismatch_reported = False
        integrated = self.log.size()
        for nid, oid, seq, state in self._notifications():
            # Leaves integrated earlier that are no longer in the log were deleted.
            while pending_leaf is not None and pending_leaf[1] < nid:
                self._deleted(pending_leaf)
                pending_leaf = next(stored_leaves, None)
            leaf = leaf_hash(state)
            if pending_leaf is not None and pending_leaf[1] == nid:
                index, _, l_oid, l_seq, l_hash, l_leaf = pending_leaf
                event_hash = hashlib.sha256(state).digest()
                if l_hash != event_hash or l_oid != oid or l_seq != seq or l_leaf != leaf:
                    self.report(
                        index,
                        "log",
                        index,
                        None,
                        f"leaf {index} ({self._where(oid, seq)}) was altered after "
                        f"integration: hash {l_hash.hex()} then, {event_hash.hex()} now",
                    )
                pending_leaf = next(stored_leaves, None)
            elif pending_leaf is not None:
                self.report(
                    compact.size,
                    "log",
                    compact.size,
                    None,
                    f"{self._where(oid, seq)} (notification {nid}) appears between "
                    "integrated leaves: inserted after integration",
                )
            finished = compact.append(leaf)[1:]  # leaf hashes: checked above
            if compact.size <= integrated:
                for level, idx, h in finished:
                    stored = next(stored_nodes, None)
                    if node_mismatch_reported:
                        continue
                    if stored != (level, idx, h):  # None, where nodes are missing
                        node_mismatch_reported = True
                        self.report(
                            compact.size - 1,
                            "log",
                            compact.size - 1,
                            None,
                            f"stored tree node ({level}, {idx}) differs from the tree "
                            "recomputed from the events",
                        )
            for name, root in signed.get(compact.size, ()):
                if root != compact.root():
                    self._root_differs(name, compact.size, root, compact.root())
        while pending_leaf is not None:
            self._deleted(pending_leaf)
            pending_leaf = next(stored_leaves, None)
        extra = next(stored_nodes, None)
        if extra is not None and not node_mismatch_reported and compact.size >= integrated:
            # A node past the integrated leaves: the newest leaves were deleted after
            # integration (which the stored tree still records), not merely not yet
            # integrated.
            self.report(
                integrated,
                "log",
                integrated,
                None,
                f"stored tree node ({extra[0]}, {extra[1]}) lies beyond the {integrated} "
                "integrated leaves: leaves were deleted after integration",
            )
        for size, kept in sorted(signed.items()):
            for name, _ in kept if size > compact.size else ():
                self._beyond(name, size, compact.size)
            if integrated < size <= compact.size and any(name is None for name, _ in kept):
                # Signed over leaves the stored log no longer has (the integrator signs
                # only what it has integrated, and never removes a leaf).
                self.report(
                    size,
                    "log",
                    size,
                    None,
                    f"checkpoint at size {size}, but the stored log holds only {integrated} "
                    "integrated leaves: leaves were deleted after integration",
                )
        self.leaves = compact.size

    def _root_differs(self, name: str | None, size: int, root: bytes, given: bytes) -> None:
        """A signed root at `size` that the stored events no longer give."""
        self.report(
            size,
            "log",
            size,
            None,
            f"checkpoint at size {size} signed root {b64encode(root)}, but the stored "
            f"events give {b64encode(given)}: events before it were deleted, altered, "
            "reordered or inserted"
            if name is None
            else f"the checkpoint held outside the ledger ({name}) signed root "
            f"{b64encode(root)} at size {size}, but the stored events give "
            f"{b64encode(given)}: history before it was rewritten since (events "
            "altered, deleted, reordered or inserted)",
        )

    def _beyond(self, name: str | None, size: int, stored: int) -> None:
        """A signed checkpoint larger than the log the stored events give."""
        self.report(
            size,
            "log",
            size,
            None,
            f"checkpoint at size {size}, but only {stored} events are stored: events were "
            "deleted after it was published"
            if name is None
            else f"the checkpoint held outside the ledger ({name}) is at size {size}, but "
            f"only {stored} events are stored: events it covers were deleted since",
        )

    def _deleted(self, leaf: tuple[Any, ...]) -> None:
        index, _, oid, seq, event_hash, _ = leaf  # of their kinds (see _stored)
        self.report(
            index,
            "log",
            index,
            None,
            f"leaf {index} ({self._where(oid, seq)}, event hash {event_hash.hex()}) "
            "was integrated but is no longer stored (deleted)",
        )

    def _checked_anchors(self) -> list[tuple[str, int, bytes]]:
        """Each checkpoint held outside whose log signature verifies; one that does not
        is reported (the log key, or the genesis naming it, may have been replaced)."""
        out = []
        for name, note in self.anchors:
            try:
                cp = verify_checkpoint(note, self.verifier)
            except ValueError as e:  # NoteError among them
                self.report(
                    0,
                    "log",
                    0,
                    None,
                    f"the checkpoint held outside the ledger ({name}) is not one of this "
                    f"ledger's log: {e}",
                )
                continue
            out.append((name, cp.size, cp.root))
        self.anchors_checked = len(out)
        return out

    def _checked_checkpoints(self) -> list[tuple[int, bytes]]:
        out = []
        notes: dict[int, str] = {}
        for size, root, note in self.log.checkpoints():
            notes[size] = note
            self.checkpoints += 1
            try:
                cp = verify_checkpoint(note, self.verifier)
            except (NoteError, ValueError) as e:
                self.report(size, "log", size, None, f"checkpoint at size {size}: {e}")
                continue
            if (cp.size, cp.root) != (size, root):
                self.report(
                    size,
                    "log",
                    size,
                    None,
                    f"checkpoint row at size {size} does not match its signed note",
                )
                continue
            out.append((size, root))
        for size, witness, vkey, line in self.log.cosignatures():
            try:
                verify_cosignature(notes.get(size, "") + line + "\n", NoteVerifier.parse(vkey))
            except (NoteError, ValueError) as e:
                self.report(
                    size, "log", size, None, f"cosignature by {witness} at size {size}: {e}"
                )
        return out


def stream_namer(store: Store) -> Callable[[str], str]:
    """Names streams for messages from their first stored event (cached)."""
    from uuid import UUID

    from .verify import FormatError, parse_envelope

    cache: dict[str, str] = {}

    def name_of(oid: str) -> str:
        if oid not in cache:
            rows = store.app.recorder.select_events(UUID(oid), limit=1)
            try:
                cache[oid] = (
                    parse_envelope(bytes(rows[0].state)).stream if rows else f"stream {oid}"
                )
            except (FormatError, KeyError):
                cache[oid] = f"stream {oid}"
        return cache[oid]

    return name_of


def audit_log_elsewhere(
    url: str, origin: str, ledger_public_key: bytes, anchors: Sequence[Anchor] = ()
) -> tuple[int, int, int, list[tuple[int, str, int, str | None, str]]]:
    """The Merkle pass in a worker process, alongside the signature checks."""
    from .log import log_verifier
    from .store import open_store

    store = open_store(url, create=False)
    log = VerifiableLog(store)
    problems: list[tuple[int, str, int, str | None, str]] = []
    try:
        auditor = LogAuditor(
            store,
            log,
            log_verifier(origin, ledger_public_key),
            stream_namer(store),
            lambda *p: problems.append(p),
            anchors,
        )
        auditor.run()
        return auditor.leaves, auditor.checkpoints, auditor.anchors_checked, problems
    finally:
        log.close()
        store.close()
