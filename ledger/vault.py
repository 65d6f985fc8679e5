"""The vault: people's identifying data, encrypted, one data key per subject; crypto-shredding.

Chained events carry only pseudonymous references (keyed HMAC over normalised
identifiers, so the same person gets the same reference in every agency and
borough). Names, dates of birth and addresses live here, sealed with AES-GCM under
a data key per subject, which is itself sealed under the master key. The master
key and the linkage key live in files (or the environment), never in the database.
Erasure destroys a subject's data key and ciphertext and appends a ledger-signed
`SUBJECT_ERASED` event; every hash, signature and proof still verifies. A legal
hold on the subject, or on any case that mentions it, blocks erasure.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .canonical import format_recorded_at
from .errors import (
    Conflict,
    Forbidden,
    IntegrityError,
    KeyFileError,
    NarrativeErased,
    NotFound,
    UsageError,
)
from .keys import create_private
from .narrative import NarrativeText, Term, erasure_terms, identifying_terms, mask, names_any
from .refs import REF_RE, pseudonym
from .store import NARRATIVE_TABLE
from .verify import LEDGER_AGENCY, NARRATIVE_FIELDS, b64decode, sealed_commitment, stream_id

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .core import Ledger
    from .verify import Envelope

KEY_CHECK = b"response-ledger vault master key check v1"
ERASED = "[erased]"
MISSING = "[missing from the vault]"  # committed in the chain, but its sealed text is gone
CASE_KEY_CACHE = 20000
TEXT_CACHE_CASES = 64


def _key_file(path: Path, env: str) -> bytes:
    """A 32-byte key from `$env` (base64) or from `path`, created 0600 if absent."""
    text = os.environ.get(env)
    if not text:  # the file, made by whichever process opening the ledger comes first
        stored = create_private(path, lambda: base64.b64encode(AESGCM.generate_key(256)) + b"\n")
        text = stored.decode("ascii", "replace").strip()
    try:
        raw = b64decode(text)
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise KeyFileError(f"{env} / {path} does not hold a 32-byte key")
    return raw


def _seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(12)
    return nonce + AESGCM(key).encrypt(nonce, data, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    return AESGCM(key).decrypt(sealed[:12], sealed[12:], aad)


@dataclass(frozen=True)
class Subject:
    ref: str
    kind: str
    name: str
    dob: str | None
    address: str | None
    borough: str | None = None


# Panels see an age band, never a date of birth: bands follow the ages at which
# the law and guidance change (under 13: no capacity to consent; 16-17: still a child).
AGE_BANDS: tuple[tuple[int, str], ...] = (
    (5, "0-4"),
    (10, "5-9"),
    (13, "10-12"),
    (16, "13-15"),
    (18, "16-17"),
    (25, "18-24"),
)
VIEWS = ("full", "agency", "panel", "auditor")


def age_band(dob: str | None, on: date) -> str | None:
    """The band a person born on `dob` falls in on `on`; None if unknown or unreadable."""
    if not dob or dob == ERASED:
        return None
    try:
        born = date.fromisoformat(dob)
    except ValueError:
        return None
    age = on.year - born.year - ((on.month, on.day) < (born.month, born.day))
    if age < 0:
        return None
    return next((band for limit, band in AGE_BANDS if age < limit), "25+")


class Vault:
    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.db = ledger.log.db
        keys = ledger.keys_dir
        self.linkage = _key_file(keys / "linkage.key", "LEDGER_LINKAGE_KEY")
        self.master = _key_file(keys / "master.key", "LEDGER_MASTER_KEY")
        self._check_master()
        self._case_keys: dict[str, bytes] = {}  # unwrapped narrative keys, dropped on erasure
        # Recently read narrative, with the case's revision when it was read.
        self._texts: dict[str, tuple[int | None, dict[str, dict[str, str]]]] = {}
        self._cache_lock = threading.Lock()  # API threads share both caches

    def _check_master(self) -> None:
        """Refuse a master key other than the one this vault was started with."""
        with self.db.write() as cur:
            row = cur.execute("SELECT value FROM vault_meta WHERE name = 'key_check'").fetchone()
            if row is None:
                cur.execute(
                    "INSERT INTO vault_meta VALUES ('key_check', ?)",
                    (_seal(self.master, KEY_CHECK, b"key-check"),),
                )
                return
        try:
            if _open(self.master, bytes(row[0]), b"key-check") != KEY_CHECK:
                raise InvalidTag
        except InvalidTag:
            raise KeyFileError(
                "wrong master key: it is not the key this vault was sealed with "
                "(nothing was written)"
            ) from None

    def reference(self, kind: str, name: str, dob: str | None) -> str:
        return pseudonym(kind, f"{name} {dob or ''}", self.linkage)

    def add(
        self,
        name: str,
        dob: str | None = None,
        address: str | None = None,
        kind: str = "child",
        borough: str | None = None,
        supplier: str | None = None,
    ) -> str:
        """Seal a person's identifying data; their reference (the same for the same person).

        `supplier` is the agency handing the identity over: it may later read back the
        identities it supplied, as no other agency may.
        """
        if not name.strip():
            raise UsageError("a subject needs a name")
        if dob is not None:
            try:
                date.fromisoformat(dob)
            except ValueError:
                raise UsageError(f"date of birth {dob!r} is not a date (YYYY-MM-DD)") from None
        ref = self.reference(kind, name, dob)
        plaintext = json.dumps(
            {"name": name, "dob": dob, "address": address, "borough": borough}
        ).encode()
        data_key = AESGCM.generate_key(bit_length=256)
        now = _now()
        with self.db.write() as cur:
            # A subject already held keeps its sealed data: the reference is what the
            # caller needs, and a second supplier is recorded beside the first.
            if not cur.execute("SELECT 1 FROM vault_subjects WHERE ref = ?", (ref,)).fetchone():
                cur.execute(
                    "INSERT INTO vault_subjects VALUES (?, ?, ?, ?, ?, NULL, NULL)",
                    (
                        ref,
                        kind,
                        _seal(self.master, data_key, _subject_key_aad(ref)),
                        _seal(data_key, plaintext, ref.encode()),
                        now,
                    ),
                )
            if supplier is not None:
                cur.execute(
                    "INSERT INTO vault_suppliers VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                    (ref, supplier, now),
                )
        return ref

    def suppliers(self, ref: str) -> set[str]:
        """The agencies that handed this subject's identity to the vault."""
        with self.db.read() as cur:
            rows = cur.execute("SELECT agency FROM vault_suppliers WHERE ref = ?", (ref,))
            return {str(r[0]) for r in rows.fetchall()}

    def show(self, ref: str, reader: str, reason: str) -> Subject:
        """Decrypt a subject's data; the read is put on the access log first."""
        if not reason.strip():
            raise UsageError("say why you are reading this subject's data (--reason)")
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT kind, wrapped_key, ciphertext, erased_at FROM vault_subjects WHERE ref = ?",
                (ref,),
            ).fetchone()
        if row is None:
            raise NotFound(f"no subject {ref} in the vault")
        if row[3] is not None:
            return Subject(ref, str(row[0]), ERASED, ERASED, ERASED, ERASED)
        self.ledger.record_access(f"subject:{ref}", reader, "vault", f"show: {reason}")
        data = self._open_subject(ref, row[1], row[2])
        return Subject(
            ref,
            str(row[0]),
            data["name"],
            data.get("dob"),
            data.get("address"),
            data.get("borough"),
        )

    def view(
        self,
        ref: str,
        role: str,
        reader: str,
        reason: str,
        on: date | None = None,
        agency: str | None = None,
    ) -> dict[str, Any]:
        """A subject as a role may see it.

        `full` (the operator holding the master key) sees everything; `agency` sees
        everything only if `agency` supplied the subject; `panel` sees the reference,
        an age band and the borough, never a name, date of birth or address;
        `auditor` sees metadata only, and nothing is decrypted for it.
        """
        if role not in VIEWS:
            raise UsageError(f"view {role!r} is not one of {', '.join(VIEWS)}")
        if role == "agency":
            if agency is None or agency not in self.suppliers(ref):
                self._metadata(ref)  # an unknown subject is 404, not 403
                raise Forbidden(f"subject {ref} was not supplied by agency {agency}")
            role = "full"
        if role == "auditor":
            return self._metadata(ref)
        subject = self.show(ref, reader, f"{role} view: {reason}")
        if role == "full":
            return {
                "ref": ref,
                "kind": subject.kind,
                "name": subject.name,
                "dob": subject.dob,
                "address": subject.address,
                "borough": subject.borough,
            }
        erased = subject.name == ERASED
        return {
            "ref": ref,
            "kind": subject.kind,
            "age_band": ERASED if erased else age_band(subject.dob, on or datetime.now(UTC).date()),
            "borough": ERASED if erased else subject.borough,
        }

    def _metadata(self, ref: str) -> dict[str, Any]:
        """What an auditor may see of a subject; nothing is decrypted."""
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT kind, created_at, erased_at FROM vault_subjects WHERE ref = ?", (ref,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no subject {ref} in the vault")
        return {"ref": ref, "kind": row[0], "added_at": row[1], "erased_at": row[2]}

    def _cases_mentioning(self, ref: str) -> list[str]:
        streams = self.ledger.store.catalog.streams_mentioning(ref)
        return sorted(s.removeprefix("case/") for s in streams)

    @staticmethod
    def _holds(cur: Any, targets: list[str]) -> list[tuple[str, str]]:
        return [
            (str(r[0]), str(r[1]))
            for t in targets
            for r in cur.execute(
                "SELECT target, reason FROM vault_holds WHERE target = ?", (t,)
            ).fetchall()
        ]

    def erase(self, ref: str, reason: str, dry_run: bool = False) -> dict[str, Any]:
        """Crypto-shred a subject: destroy the data key and the ciphertext, and each
        narrative text that names them (its commitment cannot be edited, so the text
        goes); then record it. Holds are checked in the same transaction.

        Returns what went (or, with `dry_run`, would go, with nothing changed):
        `destroyed`, and `kept`: texts that mention only a part of the name (a first
        name, say), which an operator may review and erase with their case.
        """
        if not reason.strip():
            raise UsageError("erasure needs a --reason")
        with self.db.read() as cur:
            row = cur.execute(
                "SELECT erased_at FROM vault_subjects WHERE ref = ?", (ref,)
            ).fetchone()
        if row is None:
            raise NotFound(f"no subject {ref} in the vault")
        if row[0] is not None:
            if self.ledger.store.catalog.lookup([f"erased-{ref}"]):
                raise Conflict(f"subject {ref} was already erased at {row[0]}")
            if not dry_run:
                self.db.scrub("vault_subjects")  # a stopped erasure: finish and record it
                self._record_erasure(ref, reason)
            return {"ref": ref, "destroyed": [], "kept": [], "dry_run": dry_run}
        cases = self._cases_mentioning(ref)
        with self.db.read() as cur:
            holds = self._holds(cur, [ref, *cases])
        if holds:
            raise Conflict(
                f"subject {ref} is under a legal hold ({holds[0][0]}: {holds[0][1]}); "
                "clear the hold before erasing"
            )
        # Their record and the narrative of the cases naming them are opened, to find
        # the texts to destroy: on the access log first.
        verb = "erase (dry run)" if dry_run else "erase"
        self.ledger.record_accesses(
            [(f"subject:{ref}", "vault", "vault", f"{verb}: {reason}")]
            + [(c, "vault", "vault", f"{verb} subject {ref}: {reason}") for c in cases]
        )
        plan: dict[str, Any] = {"ref": ref, "destroyed": [], "kept": [], "dry_run": dry_run}
        with self.db.write() as cur:
            if self._cases_mentioning(ref) != cases:
                raise Conflict(f"cases naming {ref} changed while it was being erased; run again")
            holds = self._holds(cur, [ref, *cases])
            if holds:
                raise Conflict(f"subject {ref} came under a legal hold ({holds[0][0]}); not erased")
            row = cur.execute(
                "SELECT erased_at, wrapped_key, ciphertext FROM vault_subjects WHERE ref = ?",
                (ref,),
            ).fetchone()
            if row[0] is not None:
                raise Conflict(f"subject {ref} was erased at {row[0]} while this erasure ran")
            data = self._open_subject(ref, row[1], row[2])
            name, address = str(data["name"]), data.get("address")
            destroy, mention = erasure_terms(name, address), identifying_terms(name, address)
            if cases and not self.db.url.is_sqlite and not dry_run:
                # Appends to these cases take FOR SHARE on the same rows, in the same order.
                cur.execute(
                    "SELECT case_id FROM vault_case_keys WHERE case_id = ANY(?) "
                    "ORDER BY case_id FOR UPDATE",
                    (cases,),
                ).fetchall()
            for case_id in cases:
                naming, mentioning = self._texts_naming(cur, case_id, destroy, mention)
                plan["destroyed"] += [
                    {"case_id": case_id, "event_id": e, "field": f} for e, f in naming
                ]
                plan["kept"] += [
                    {"case_id": case_id, "event_id": e, "field": f} for e, f in mentioning
                ]
                if naming and not dry_run:
                    cur.executemany(
                        f"UPDATE {NARRATIVE_TABLE} SET sealed = NULL, erased = ? "
                        "WHERE event_id = ? AND field = ?",
                        [(f"subject:{ref}", e, f) for e, f in naming],
                    )
                    cur.execute(
                        "UPDATE vault_case_keys SET revision = revision + 1 WHERE case_id = ?",
                        (case_id,),
                    )
            if dry_run:
                return plan  # nothing was changed in this transaction
            cur.execute(
                "UPDATE vault_subjects SET wrapped_key = NULL, ciphertext = NULL, "
                "erased_at = ?, erase_reason = ? WHERE ref = ?",
                (_now(), reason, ref),
            )
        for case_id in cases:
            self.forget(case_id)
        self.db.scrub("vault_subjects")
        if plan["destroyed"]:
            self.db.scrub(NARRATIVE_TABLE)
        self._record_erasure(ref, reason)
        return plan

    def _record_erasure(self, ref: str, reason: str) -> None:
        self.ledger.append_system(
            {}, "SUBJECT_ERASED", {"subject_ref": ref, "reason": reason}, event_id=f"erased-{ref}"
        )

    def _texts_naming(
        self, cur: Any, case_id: str, destroy: list[Term], mention: list[Term]
    ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """(event, field) of a case's narrative texts that name a person by the `destroy`
        terms, and of those that only `mention` part of their name."""
        key_row = cur.execute(
            "SELECT wrapped_key FROM vault_case_keys WHERE case_id = ?", (case_id,)
        ).fetchone()
        if key_row is None or key_row[0] is None:
            return [], []  # no narrative, or all of it already erased
        aead = self._case_cipher(case_id, key_row[0])
        rows = cur.execute(
            f"SELECT event_id, field, sealed FROM {NARRATIVE_TABLE} "
            "WHERE case_id = ? AND sealed IS NOT NULL ORDER BY event_id, field",
            (case_id,),
        ).fetchall()
        naming: list[tuple[str, str]] = []
        mentioning: list[tuple[str, str]] = []
        for event_id, field, sealed in rows:
            try:
                text = aead.decrypt(
                    sealed[:12], bytes(sealed[12:]), _narrative_aad(case_id, event_id, field)
                )[32:].decode()
            except InvalidTag:
                raise IntegrityError(
                    f"case {case_id} event {event_id}: sealed narrative.{field} was altered "
                    "(AES-GCM tag does not verify); nothing was erased"
                ) from None
            if names_any(text, destroy):
                naming.append((str(event_id), str(field)))
            elif names_any(text, mention):
                mentioning.append((str(event_id), str(field)))
        return naming, mentioning

    def hold(self, target: str, reason: str, on: bool = True) -> None:
        if on and not self._holdable(target):
            # A mistyped target would be held while the real one stays erasable.
            raise NotFound(f"no case or subject {target!r} to put under a legal hold")
        with self.db.write() as cur:
            held = cur.execute("SELECT 1 FROM vault_holds WHERE target = ?", (target,)).fetchone()
            if on:
                if held:
                    raise Conflict(f"{target} is already under a legal hold")
                cur.execute(
                    "INSERT INTO vault_holds VALUES (?, ?, ?)",
                    (target, reason, _now()),
                )
            else:
                if not held:
                    raise NotFound(f"{target} is not under a legal hold")
                cur.execute("DELETE FROM vault_holds WHERE target = ?", (target,))

    def _holdable(self, target: str) -> bool:
        with self.db.read() as cur:
            if cur.execute("SELECT 1 FROM vault_subjects WHERE ref = ?", (target,)).fetchone():
                return True
        return bool(self.ledger.store.catalog.heads([stream_id(f"case/{target}")]))

    # --- narrative: one key per case --------------------------------------------------
    def cached_case_keys(self, case_ids: set[str]) -> dict[str, bytes] | None:
        """These cases' narrative keys if all are held here already, else None: lets a
        writer seal narrative inside its own transaction, with no write of the vault's."""
        with self._cache_lock:
            if not all(c in self._case_keys for c in case_ids):
                return None
            return {c: self._case_keys[c] for c in case_ids}

    def case_keys(self, case_ids: set[str]) -> dict[str, bytes]:
        """The narrative keys of these cases, made on first use; refused once erased.

        A key held here may outlive an erasure made by another process; the write
        transaction of the events refuses such a case (NarrativeErased) all the same.
        """
        with self._cache_lock:
            found = {c: self._case_keys[c] for c in case_ids if c in self._case_keys}
        missing = sorted(case_ids - found.keys())
        if not missing:
            return found
        with self.db.write() as cur:  # serialised, so two writers agree on one key
            for case_id in missing:
                row = cur.execute(
                    "SELECT wrapped_key, erased_at FROM vault_case_keys WHERE case_id = ?",
                    (case_id,),
                ).fetchone()
                if row is not None and row[1] is not None:
                    raise NarrativeErased(case_id, str(row[1]))
                if row is None:
                    key = AESGCM.generate_key(bit_length=256)
                    cur.execute(
                        "INSERT INTO vault_case_keys (case_id, wrapped_key, created_at) "
                        "VALUES (?, ?, ?)",
                        (case_id, _seal(self.master, key, _case_key_aad(case_id)), _now()),
                    )
                else:
                    key = self._case_key(case_id, row[0])
                found[case_id] = key
        with self._cache_lock:
            if len(self._case_keys) + len(missing) > CASE_KEY_CACHE:
                self._case_keys.clear()
            self._case_keys.update({c: found[c] for c in missing})
        return found

    def _open_subject(self, ref: str, wrapped: Any, sealed: Any) -> dict[str, Any]:
        """A subject's sealed record, opened with its data key (itself under the master key)."""
        try:
            key = _open(self.master, bytes(wrapped), _subject_key_aad(ref))
            data: dict[str, Any] = json.loads(_open(key, bytes(sealed), ref.encode()))
        except (InvalidTag, TypeError):  # TypeError: a key or record nulled behind our back
            raise IntegrityError(
                f"subject {ref}: the sealed data or its key was altered or removed "
                "(AES-GCM tag does not verify)"
            ) from None
        return data

    def _case_cipher(self, case_id: str, wrapped: Any) -> AESGCM:
        return AESGCM(self._case_key(case_id, wrapped))

    def _case_key(self, case_id: str, wrapped: Any) -> bytes:
        try:
            return _open(self.master, bytes(wrapped), _case_key_aad(case_id))
        except InvalidTag:
            raise IntegrityError(
                f"case {case_id}: narrative key was altered (AES-GCM tag does not verify)"
            ) from None

    @staticmethod
    def seal_narrative(
        key: bytes, case_id: str, event_id: str, field: str, text: NarrativeText
    ) -> bytes:
        return _seal(key, text.salt + text.text.encode(), _narrative_aad(case_id, event_id, field))

    def narrative_view(
        self,
        case_id: str,
        envelopes: Sequence[Envelope],
        view: str,
        reader: str | None = None,
        reason: str = "",
        agency: str | None = None,
        recorded: bool = False,
        cached: bool = True,
    ) -> dict[str, dict[str, str]]:
        """A case's narrative texts by event id and field, as `view` may see them.

        `full` sees the words; `agency` only those of events `agency` wrote; `panel`
        sees them with identifiers masked (the names and addresses the vault holds for
        the people the case refers to, then postcodes, phone numbers, emails, dates,
        street addresses and vehicle registrations); `auditor` sees none. Each text is
        checked against the commitment its agency signed when it is decrypted, so not
        even the master key's holder can change the words unseen. With a `reader`, the
        read is put on the case's access log first, unless the caller has `recorded`
        this very read there already (an HTTP read does). Texts of recently read cases
        are kept in memory (`cached`); every read still asks the database whether the
        case's narrative was erased, so an erasure in any process ends them.
        """
        if view not in VIEWS:
            raise UsageError(f"view {view!r} is not one of {', '.join(VIEWS)}")
        committed: dict[str, dict[str, str]] = {
            e.event_id: e.body["narrative"]
            for e in envelopes
            if "narrative" in e.body and (view != "agency" or e.agency == agency)
        }
        # Agencies' text from before body version 2 sits in the signed payload itself:
        # a panel sees it masked like the rest.
        legacy = {
            e.event_id: {
                f: str(e.body["payload"][f]) for f in NARRATIVE_FIELDS if e.body["payload"].get(f)
            }
            for e in envelopes
            if view == "panel"
            and e.body["v"] == 1
            and e.agency != LEDGER_AGENCY
            and any(e.body["payload"].get(f) for f in NARRATIVE_FIELDS)
        }
        if not (committed or legacy) or view == "auditor":
            return {}
        out: dict[str, dict[str, str]] = dict(legacy)
        if committed:
            if reader is not None and not recorded:
                self.ledger.record_access(case_id, reader, "vault", f"narrative: {reason}")
            texts = self._case_texts(case_id, committed, cached)
            out |= {
                event_id: {name: texts.get(event_id, {}).get(name, MISSING) for name in fields}
                for event_id, fields in committed.items()
            }
        if view == "panel":
            names = self._names_to_mask(case_id, envelopes, reader or "panel", reason)
            out = {
                event_id: {
                    f: t if t in (ERASED, MISSING) else mask(t, names) for f, t in fields.items()
                }
                for event_id, fields in out.items()
            }
        return out

    def _case_texts(
        self, case_id: str, committed: dict[str, dict[str, str]], cached: bool
    ) -> dict[str, dict[str, str]]:
        """Every stored narrative text of a case, decrypted and checked against the
        commitments; erased ones as ERASED. Served from memory while it covers them and
        the case's revision (bumped whenever any of its texts is erased) is unchanged."""
        with self.db.read() as cur:
            key_row = cur.execute(
                "SELECT wrapped_key, revision FROM vault_case_keys WHERE case_id = ?", (case_id,)
            ).fetchone()
        if key_row is not None and key_row[0] is None:  # erased: nothing left to decrypt
            self.forget(case_id)
            return {e: {f: ERASED for f in fields} for e, fields in committed.items()}
        revision = None if key_row is None else int(key_row[1])
        with self._cache_lock:
            entry = self._texts.pop(case_id, None) if cached else None
        texts = None
        if entry is not None and entry[0] == revision:
            texts = entry[1]
        if texts is None or any(
            name not in texts.get(event_id, ())
            for event_id, fields in committed.items()
            for name in fields
        ):
            texts = self._decrypt_case(case_id, key_row, committed)
        with self._cache_lock:
            self._texts[case_id] = (revision, texts)  # most recently read last
            while len(self._texts) > TEXT_CACHE_CASES:
                self._texts.pop(next(iter(self._texts)), None)
        return texts

    def _decrypt_case(
        self, case_id: str, key_row: Any, committed: dict[str, dict[str, str]]
    ) -> dict[str, dict[str, str]]:
        with self.db.read() as cur:
            rows = cur.execute(
                f"SELECT event_id, field, sealed, erased FROM {NARRATIVE_TABLE} WHERE case_id = ?",
                (case_id,),
            ).fetchall()
        texts: dict[str, dict[str, str]] = {}
        if key_row is None or not rows:
            return texts
        decrypt = self._case_cipher(case_id, key_row[0]).decrypt
        for event_id, field, sealed, erased in rows:
            commitment = committed.get(event_id, {}).get(field)
            if commitment is None:
                continue  # not this reader's, or not among the events this read covers
            if sealed is None:
                if erased is not None:  # destroyed with a person it named
                    texts.setdefault(event_id, {})[field] = ERASED
                continue
            where = f"case {case_id} event {event_id}: sealed narrative.{field}"
            try:
                aad = _narrative_aad(case_id, event_id, field)
                plain = decrypt(sealed[:12], bytes(sealed[12:]), aad)
            except InvalidTag:
                raise IntegrityError(f"{where} was altered (AES-GCM tag does not verify)") from None
            if sealed_commitment(field, plain) != commitment:  # plain = salt ‖ UTF-8 text
                raise IntegrityError(f"{where} does not match the commitment in its signed event")
            if event_id in texts:
                texts[event_id][field] = plain[32:].decode()
            else:
                texts[event_id] = {field: plain[32:].decode()}
        return texts

    def check(self, reader: str) -> tuple[int, list[str]]:
        """Open every sealed text and identity the vault still holds and check each
        narrative against the commitment its agency signed; (texts and identities
        opened, problems). An erasure counts only if the chain records it: a key or
        text gone without its `NARRATIVE_ERASED` or `SUBJECT_ERASED` is named.

        Nothing is shown, but each batch of cases and subjects is put on the access log
        before it is opened.
        """
        problems: list[str] = []
        checked = 0
        erased_cases: set[str] = set()
        erased_subjects: set[str] = set()

        def read_erasures() -> None:
            """The erasures the chain records; read again before calling one unrecorded,
            since an erasure destroys first and records after."""
            for e in self.ledger.stream_envelopes("ledger"):
                if e.type == "NARRATIVE_ERASED":
                    erased_cases.add(str(e.body["payload"]["case_ref"]))
                elif e.type == "SUBJECT_ERASED":
                    erased_subjects.add(str(e.body["payload"]["subject_ref"]))

        def recorded_case(case_id: str) -> bool:
            if case_id not in erased_cases:
                read_erasures()
            return case_id in erased_cases

        def recorded_subject(ref: str) -> bool:
            if ref not in erased_subjects:
                read_erasures()
            return ref in erased_subjects

        read_erasures()
        batch: list[tuple[str, list[Envelope]]] = []

        def check_case(case_id: str, envelopes: list[Envelope]) -> None:
            nonlocal checked
            with self.db.read() as cur:
                key = cur.execute(
                    "SELECT wrapped_key, erased_at FROM vault_case_keys WHERE case_id = ?",
                    (case_id,),
                ).fetchone()
                gone = cur.execute(
                    f"SELECT event_id, field, erased FROM {NARRATIVE_TABLE} "
                    "WHERE case_id = ? AND erased IS NOT NULL",
                    (case_id,),
                ).fetchall()
            recorded = case_id in erased_cases
            if key is None:
                problems.append(
                    f"case {case_id}: the chain commits to narrative but the vault "
                    "holds no key for it"
                )
                return
            if key[0] is None:
                if not recorded_case(case_id):
                    problems.append(
                        f"case {case_id}: the narrative key is gone but no NARRATIVE_ERASED "
                        "records it (run 'ledger narrative erase' to record an erasure)"
                    )
                return
            if recorded:
                problems.append(
                    f"case {case_id}: the chain records the narrative's erasure "
                    "but its key survives"
                )
            for event_id, name, by in gone:
                if not recorded_subject(str(by).removeprefix("subject:")):
                    problems.append(
                        f"case {case_id} event {event_id}: narrative.{name} was destroyed "
                        f"as naming {by}, whose erasure the chain does not record"
                    )
            try:
                texts = self.narrative_view(case_id, envelopes, "full", cached=False)
            except IntegrityError as e:
                problems.append(str(e))
                return
            for event_id, fields in texts.items():
                for name, text in fields.items():
                    if text == MISSING:
                        problems.append(
                            f"case {case_id} event {event_id}: narrative.{name} is committed "
                            "in the chain but missing from the vault"
                        )
                    elif text != ERASED:
                        checked += 1

        def check_cases() -> None:
            self.ledger.record_accesses(
                [(c, reader, "vault", "narrative: vault check") for c, _ in batch]
            )
            for case_id, envelopes in batch:
                check_case(case_id, envelopes)
            batch.clear()

        for case_id in self.ledger.iter_case_ids():
            envelopes = self.ledger.case_envelopes(case_id, cached=False)
            if any("narrative" in e.body for e in envelopes):
                batch.append((case_id, envelopes))
            if len(batch) >= 200:
                check_cases()
        if batch:
            check_cases()
        with self.db.read() as cur:
            subjects = cur.execute(
                "SELECT ref, wrapped_key, ciphertext FROM vault_subjects WHERE erased_at IS NULL"
            ).fetchall()
            erased_here = {
                str(r[0])
                for r in cur.execute(
                    "SELECT ref FROM vault_subjects WHERE erased_at IS NOT NULL"
                ).fetchall()
            }
        problems += [
            f"subject {ref}: erased in the vault but no SUBJECT_ERASED records it"
            for ref in sorted(erased_here - erased_subjects)
            if not recorded_subject(ref)
        ]
        problems += [
            f"subject {r[0]}: the chain records the erasure but the vault still holds the data"
            for r in subjects
            if r[0] in erased_subjects
        ]
        for start in range(0, len(subjects), 500):
            chunk = subjects[start : start + 500]
            self.ledger.record_accesses(
                [(f"subject:{r[0]}", reader, "vault", "show: vault check") for r in chunk]
            )
            for ref, wrapped, sealed in chunk:
                try:
                    self._open_subject(ref, wrapped, sealed)
                    checked += 1
                except IntegrityError as e:
                    problems.append(str(e))
        return checked, problems

    def _names_to_mask(
        self, case_id: str, envelopes: Sequence[Envelope], reader: str, reason: str
    ) -> dict[Term, str]:
        """Names (and each part of them) of the case's people, each mapped to its reference.

        Decrypting them is put on each subject's access log, in one batch.
        """
        refs = sorted({r for e in envelopes for r in REF_RE.findall(e.body_bytes.decode())})
        rows: list[Any] = []
        with self.db.read() as cur:
            for start in range(0, len(refs), 500):
                chunk = refs[start : start + 500]
                rows += cur.execute(
                    "SELECT ref, wrapped_key, ciphertext FROM vault_subjects WHERE ref IN "
                    f"({','.join('?' * len(chunk))}) AND erased_at IS NULL",
                    chunk,
                ).fetchall()
        if not rows:
            return {}
        self.ledger.record_accesses(
            [
                (f"subject:{r[0]}", reader, "vault", f"mask names in {case_id}: {reason}")
                for r in rows
            ]
        )
        names: dict[Term, str] = {}
        for ref, wrapped, sealed in rows:
            data = self._open_subject(ref, wrapped, sealed)
            for term in identifying_terms(str(data["name"]), data.get("address")):
                names.setdefault(term, f"[{ref}]")
        return names

    def forget(self, case_id: str) -> None:
        """Drop what this process holds of a case's narrative (its key, decrypted texts)."""
        with self._cache_lock:
            self._case_keys.pop(case_id, None)
            self._texts.pop(case_id, None)

    def erase_narrative(self, case_id: str, reason: str) -> None:
        """Crypto-shred a case's narrative (end of retention); commitments stay in the chain.

        The key and ciphertext go first, in one transaction with the legal-hold check;
        then `NARRATIVE_ERASED` is appended. Were the process to stop in between,
        `ledger verify --vault` names the unrecorded erasure and running this again
        records it.
        """
        if not reason.strip():
            raise UsageError("erasure needs a --reason")
        event_id = f"narrative-erased-{case_id}"
        with self.db.write() as cur:
            row = cur.execute(
                "SELECT erased_at FROM vault_case_keys WHERE case_id = ?", (case_id,)
            ).fetchone()
            unrecorded = row is not None and row[0] is not None
            if unrecorded and self.ledger.store.catalog.lookup([event_id]):
                raise Conflict(f"the narrative of case {case_id} was already erased at {row[0]}")
            held = self._holds(cur, [case_id])
            if held and not unrecorded:  # a finished erasure is only recorded
                raise Conflict(
                    f"case {case_id} is under a legal hold ({held[0][1]}); "
                    "clear the hold before erasing"
                )
            now = _now()
            if row is None:
                cur.execute(
                    "INSERT INTO vault_case_keys (case_id, wrapped_key, created_at, erased_at, "
                    "erase_reason) VALUES (?, NULL, ?, ?, ?)",
                    (case_id, now, now, reason),
                )
            elif not unrecorded:
                cur.execute(
                    "UPDATE vault_case_keys SET wrapped_key = NULL, erased_at = ?, "
                    "erase_reason = ? WHERE case_id = ?",
                    (now, reason, case_id),
                )
            cur.execute(f"UPDATE {NARRATIVE_TABLE} SET sealed = NULL WHERE case_id = ?", (case_id,))
        self.forget(case_id)
        self.db.scrub("vault_case_keys")
        self.db.scrub(NARRATIVE_TABLE)
        self.ledger.append_system(
            {}, "NARRATIVE_ERASED", {"case_ref": case_id, "reason": reason}, event_id=event_id
        )


def _now() -> str:
    return format_recorded_at(datetime.now(UTC))


def _subject_key_aad(ref: str) -> bytes:
    return b"data-key:" + ref.encode()


def _case_key_aad(case_id: str) -> bytes:
    return b"case-key:" + case_id.encode()


def _narrative_aad(case_id: str, event_id: str, field: str) -> bytes:
    return f"narrative:{case_id}:{event_id}:{field}".encode()
