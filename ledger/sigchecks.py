"""Ed25519 checks for a batch on the append path, run while the batch is prepared.

Verification releases the GIL, so worker threads check a batch's signatures while
the appending thread validates and chains the rest of it. Checks are handed over
a few at a time as each submission is validated, not all at the end, so that the
workers are busy from the batch's first event; and whoever waits for the results
takes back the chunks no worker has started and checks them itself, instead of
sitting idle while they queue.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import Future, ThreadPoolExecutor

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .verify import verify_chunk

CHUNK = 8  # checks per task: ~1 ms of work, against ~10 µs to hand a task over
_WORKERS = os.cpu_count() or 2
_POOL = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ed25519")
_Check = tuple[Ed25519PublicKey, bytes, bytes]


class VerifiedSignatures:
    """Signatures that verified, remembered for a while by a digest of exactly the
    bytes checked: the public key, the signature and the body. An import checks every
    signature as it vets the whole file and then writes the same bytes, which need
    not be checked twice: Ed25519 verification depends on those bytes alone, so a
    check that passed once passes again. Whether the key may still be used (revoked
    since, say) is decided at each write regardless. Holds at most `most` digests,
    about 100 bytes each; past that, signatures are checked as usual."""

    def __init__(self, most: int = 500_000) -> None:
        self._most = most
        self._digests: set[bytes] = set()

    @staticmethod
    def digest(key: Ed25519PublicKey, sig: bytes, body_bytes: bytes) -> bytes:
        # The key's 32 raw bytes, then the signature's length, which keeps it apart
        # from the body.
        h = hashlib.sha256(key.public_bytes_raw())
        h.update(len(sig).to_bytes(4, "big"))
        h.update(sig)
        h.update(body_bytes)
        return h.digest()

    def __contains__(self, digest: bytes) -> bool:
        return digest in self._digests

    def add(self, digest: bytes) -> None:
        if len(self._digests) < self._most:
            self._digests.add(digest)


class SignatureChecks:
    """The signature checks of one batch, in the order they were added; those that
    `known` holds are taken as passed without checking again, and those that pass
    are added to it."""

    def __init__(self, chunk: int = CHUNK, known: VerifiedSignatures | None = None) -> None:
        self._chunk = chunk
        self._known = known
        self._digests: list[bytes] = []  # of the checks made, in order, if `known`
        self._known_at: list[bool] = []  # for each added, if `known`: whether it held it
        self._pending: list[_Check] = []
        self._started: list[tuple[list[_Check], Future[list[bool]]]] = []
        self._results: list[bool] | None = None
        self._abandoned = False

    def add(self, key: Ed25519PublicKey, sig: bytes, body_bytes: bytes) -> None:
        if self._results is not None or self._abandoned:
            raise RuntimeError("signature checks already collected or abandoned")
        if self._known is not None:
            digest = self._known.digest(key, sig, body_bytes)
            held = digest in self._known
            self._known_at.append(held)
            if held:
                return
            self._digests.append(digest)
        self._pending.append((key, sig, body_bytes))
        if len(self._pending) >= self._chunk and _WORKERS > 1:
            chunk, self._pending = self._pending, []
            self._started.append((chunk, _POOL.submit(verify_chunk, chunk)))

    @property
    def collected(self) -> bool:
        """Whether the results are in (and kept): asking for them again costs nothing."""
        return self._results is not None

    def abandon(self) -> None:
        """Drop the checks no worker has started, unless the results are in: the
        batch is finished with, or was refused before its signatures mattered."""
        if self._results is not None:
            return
        self._abandoned = True
        for _, future in self._started:
            future.cancel()
        self._pending = []

    def results(self) -> list[bool]:
        """Whether each signature verifies; waits for the workers, helping them."""
        if self._results is not None:
            return self._results
        if self._abandoned:
            raise RuntimeError("signature checks were abandoned")
        tail = verify_chunk(self._pending)
        done: list[list[bool] | None] = [None] * len(self._started)
        # Newest first: those are the chunks least likely to have been started.
        for n in range(len(self._started) - 1, -1, -1):
            chunk, future = self._started[n]
            if future.cancel():
                done[n] = verify_chunk(chunk)
        out: list[bool] = []
        for n, (_, future) in enumerate(self._started):
            part = done[n]
            out += future.result() if part is None else part
        checked = out + tail
        if self._known is not None:
            for digest, ok in zip(self._digests, checked, strict=True):
                if ok:
                    self._known.add(digest)
            # In the order added: True where the check was known to pass.
            made = iter(checked)
            checked = [held or next(made) for held in self._known_at]
        self._results = checked
        self._pending = []
        return self._results
