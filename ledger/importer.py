"""`ledger import`: a JSONL file of events, checked whole before any is written.

An import that stopped half way would leave an inquiry's record of a case cut
at an arbitrary line. So the file is read twice: the first pass refuses it, naming
the line, for anything the ledger would refuse (a malformed line or body, a bad
signature or unknown key, a reference to no earlier event of the same case); only
then does the second pass save it, in all-or-nothing batches. The first pass keeps
a digest of each line, and the second writes only lines that match theirs: a file
changed in between (rewritten, appended to, cut short) is refused at the first line
that differs, and what is written is exactly what was checked. What can still stop
the second pass is the database itself, a key revoked in between, or such a change;
re-running the import then finishes it, as events already recorded are answered as
duplicates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .core import Ledger, Submission, check_references, references
from .errors import LedgerError, UsageError, ValidationError
from .keys import Signer, load_key_file
from .narrative import NarrativeText, from_wire
from .narrative import check as check_narrative
from .verify import b64decode, stream_of

CHECK_CHUNK = 500
DIGEST_SIZE = 16  # per line: 16 MB of digests for a million-line file


def json_value(text: str, what: str) -> Any:
    """`text` parsed as JSON, or a usage error naming `what` and where it went wrong:
    the one wording for every JSON the CLI is given (arguments and import lines)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{what} is not valid JSON: {e.msg} at column {e.colno}") from None
    except ValueError as e:  # valid JSON beyond Python's limits: a number of 4,300+ digits
        raise UsageError(f"{what} is not usable JSON: {e}") from None
    except RecursionError:
        raise UsageError(f"{what} is not usable JSON: it nests too deeply") from None


def read_lines(path: Path) -> Iterator[tuple[int, str, dict[str, Any]]]:
    """(line number, line, record) for each non-blank line."""
    try:
        with path.open(encoding="utf-8", newline="") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json_value(line, f"{path} line {n}")
                if not isinstance(record, dict) or not isinstance(record.get("body"), dict):
                    raise UsageError(f"{path} line {n}: expected an object with a 'body' object")
                yield n, line, record
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None


def _narrative(record: dict[str, Any]) -> dict[str, NarrativeText]:
    return from_wire(str(record["body"].get("event_id")), record.get("narrative"))


def _draft(record: dict[str, Any]) -> dict[str, Any]:
    """An unsigned line as a draft to seal and sign: texts sent beside a body that
    already commits to them go back into its payload, to be committed afresh."""
    body = record["body"]
    texts = _narrative(record)
    check_narrative(body, texts)  # every commitment has its text, and no text is stray
    if not texts:
        return dict(body)
    if not isinstance(body.get("payload") or {}, dict):
        raise ValidationError("body.payload must be an object")
    payload = {**(body.get("payload") or {}), **{name: t.text for name, t in texts.items()}}
    return {**{k: v for k, v in body.items() if k != "narrative"}, "payload": payload}


class Importer:
    def __init__(self, ledger: Ledger, path: Path, sign: bool) -> None:
        self.ledger = ledger
        self.path = path
        self.sign = sign
        self.signers: dict[str, Signer] = {}
        self._read: bytearray | None = None  # each line's digest, once read whole
        self._checked: bytearray | None = None  # the same, once check() has passed them

    def _where(self, n: int) -> str:
        return f"{self.path} line {n}"

    def submission(self, n: int, record: dict[str, Any]) -> Submission:
        body = record["body"]
        if "sig" in record:
            sig = record["sig"]
            try:
                raw = b64decode(sig) if isinstance(sig, str) else None
            except ValueError:
                raw = None
            if raw is None:
                raise UsageError(f"{self._where(n)}: sig is not base64")
            return Submission(body, raw, _narrative(record))
        if not self.sign:
            raise UsageError(
                f"{self._where(n)}: no 'sig'; use --sign to sign with local agency keys"
            )
        agency = body.get("agency")
        if not isinstance(agency, str):
            raise ValidationError("body.agency must name the signing agency")
        if agency not in self.signers:
            self.signers[agency] = load_key_file(self.ledger.agency_key_path(agency))
        return Submission.signed(_draft(record), self.signers[agency])

    def _lines(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """The records, as the first pass read them: that pass notes each line's
        digest, and a later one refuses a line whose digest is not the one noted."""
        checked, read, at = self._checked, bytearray(), 0
        for n, line, record in read_lines(self.path):
            digest = hashlib.blake2b(line.encode("utf-8"), digest_size=DIGEST_SIZE).digest()
            if checked is None:
                read += digest
            elif checked[at : at + DIGEST_SIZE] != digest:
                raise _changed(self.path, n)
            at += DIGEST_SIZE
            yield n, record
        if checked is None:
            self._read = read
        elif at != len(checked):
            raise _changed(self.path, None)

    def _submissions(self) -> Iterator[tuple[int, Submission]]:
        for n, record in self._lines():
            try:
                yield n, self.submission(n, record)
            except UsageError:
                raise
            except LedgerError as e:
                raise _restated(e, f"{self._where(n)}: {e}") from None

    def check(self) -> int:
        """The first pass: the number of events, or the first line the ledger would refuse."""
        stream_at: dict[str, str] = {}  # event id of each line so far -> its stream
        chunk: list[tuple[int, Submission]] = []
        total = 0
        for n, submission in self._submissions():
            chunk.append((n, submission))
            total += 1
            if len(chunk) >= CHECK_CHUNK:
                self._check_chunk(chunk, stream_at)
        self._check_chunk(chunk, stream_at)
        self._checked = self._read  # every line read and passed: now it may be written
        return total

    def _check_chunk(self, chunk: list[tuple[int, Submission]], stream_at: dict[str, str]) -> None:
        verdicts = self.ledger.screen([s for _, s in chunk])
        for (n, _), verdict in zip(chunk, verdicts, strict=True):
            if verdict is not None:
                raise _restated(verdict, f"{self._where(n)}: {verdict}")
        # A reference must name an earlier line of the same case or a recorded event
        # of it, as an append requires; the events not in the file, in one lookup.
        outside = {r for _, sub in chunk for _, r in references(sub.body) if r not in stream_at}
        recorded = self.ledger.store.catalog.lookup(sorted(outside)) if outside else {}
        for n, sub in chunk:
            stream = stream_of(sub.body)
            try:
                check_references(sub.body, stream, recorded, stream_at.get)
            except ValidationError as e:
                raise _restated(e, f"{self._where(n)}: {e}") from None
            stream_at.setdefault(sub.body["event_id"], stream)
        chunk.clear()

    def run(self, batch: int, advance: Callable[[int], None]) -> tuple[int, int]:
        """The second pass, after `check`: (appended, duplicates)."""
        if self._checked is None:
            raise RuntimeError("the file is written only once check() has passed it")
        appended = duplicates = 0
        pending: list[Submission] = []

        def flush() -> None:
            nonlocal appended, duplicates
            if not pending:
                return
            receipts = self.ledger.append_many(pending)
            duplicates += sum(r.duplicate for r in receipts)
            appended += sum(not r.duplicate for r in receipts)
            advance(len(pending))
            pending.clear()

        try:
            for _, submission in self._submissions():
                pending.append(submission)
                if len(pending) >= batch:
                    flush()
            flush()
        except LedgerError as e:
            if appended or duplicates:
                raise _restated(
                    e,
                    f"{e} (after {appended + duplicates} events were recorded; "
                    "re-run the import to finish it)",
                ) from None
            raise
        return appended, duplicates


def _changed(path: Path, n: int | None) -> UsageError:
    where = "it was cut short" if n is None else f"line {n} is not the line checked"
    return UsageError(
        f"{path} changed after it was checked ({where}); nothing from there on was written"
    )


def _restated(e: LedgerError, message: str) -> LedgerError:
    """The same refusal, of the same kind, with its message placed in the file."""
    e.args = (message,)
    return e
