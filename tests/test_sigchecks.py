"""Signature checks handed to worker threads a few at a time, and taken back by
whoever waits: results must still come out one per check, in order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import sigchecks
from ledger.sigchecks import SignatureChecks
from ledger.verify import signing_message
from tests.conftest import World, bodies_checked

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()


def _body(n: int) -> bytes:
    return b'{"n":%d}' % n


def _sig(n: int, good: bool) -> bytes:
    return (KEY if good else OTHER).sign(signing_message(_body(n)))


@settings(max_examples=40, deadline=None)
@given(
    verdicts=st.lists(st.booleans(), max_size=60),
    chunk=st.integers(min_value=1, max_value=9),
)
def test_results_are_one_per_check_in_order(verdicts: list[bool], chunk: int) -> None:
    checks = SignatureChecks(chunk)
    for n, good in enumerate(verdicts):
        checks.add(KEY.public_key(), _sig(n, good), _body(n))
    assert checks.results() == verdicts
    assert checks.results() == verdicts  # asked again: the same answer, not re-run


@contextmanager
def _workers_busy() -> Iterator[None]:
    """Every worker thread held up until the block ends."""
    release = threading.Event()
    blockers = [sigchecks._POOL.submit(release.wait) for _ in range(sigchecks._WORKERS)]
    try:
        yield
    finally:
        release.set()
        for b in blockers:
            b.result(timeout=10)


def test_waiting_takes_back_chunks_no_worker_has_started() -> None:
    """With every worker held up, the waiting thread checks the queued chunks itself."""
    with _workers_busy():
        checks = SignatureChecks(2)
        for n in range(10):
            checks.add(KEY.public_key(), _sig(n, n != 7), _body(n))
        answer: list[list[bool]] = []
        waiter = threading.Thread(target=lambda: answer.append(checks.results()))
        waiter.start()
        waiter.join(timeout=10)
        assert answer == [[n != 7 for n in range(10)]]  # not stuck behind the workers
        assert all(future.cancelled() for _, future in checks._started)


def test_abandoned_checks_do_not_run_and_cannot_be_added_to_after_results() -> None:
    with _workers_busy():
        checks = SignatureChecks(2)
        for n in range(6):
            checks.add(KEY.public_key(), _sig(n, True), _body(n))
        checks.abandon()
        assert all(future.cancelled() for _, future in checks._started)
        with pytest.raises(RuntimeError, match="abandoned"):
            checks.results()
        with pytest.raises(RuntimeError, match="abandoned"):
            checks.add(KEY.public_key(), _sig(9, True), _body(9))
    done = SignatureChecks()
    done.add(KEY.public_key(), _sig(0, True), _body(0))
    assert done.results() == [True]
    with pytest.raises(RuntimeError, match="already collected"):
        done.add(KEY.public_key(), _sig(1, True), _body(1))
    done.abandon()  # once the results are in, abandoning changes nothing
    assert done.results() == [True]


def test_a_batch_refused_while_saving_drops_its_queued_checks(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch refused after validation (here: it responds to an event of another
    case) leaves no checks queued ahead of the next batch's."""
    from ledger import core
    from ledger.errors import ValidationError

    made: list[SignatureChecks] = []

    class Recorded(SignatureChecks):
        def __init__(self, known: sigchecks.VerifiedSignatures | None = None) -> None:
            super().__init__(2, known)
            made.append(self)

    monkeypatch.setattr(core, "SignatureChecks", Recorded)
    other = world.append("police-a", case_id="C-2")
    batch = [world.signed(world.body("police-a")) for _ in range(20)]
    batch.append(world.signed(world.body("police-a", responds_to=[other.event_id])))
    with _workers_busy(), pytest.raises(ValidationError, match="not an earlier event"):
        world.ledger.append_many(batch)
    assert made[-1]._started
    assert all(future.cancelled() for _, future in made[-1]._started)


def test_a_signature_known_to_verify_is_not_checked_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Known by exactly its bytes: the same key, signature and body. The results stay
    one per check, in order, whichever were known."""
    known = sigchecks.VerifiedSignatures()
    bodies = bodies_checked(monkeypatch)
    verdicts = [True, False, True, True]
    first = SignatureChecks(2, known)
    for n, good in enumerate(verdicts):
        first.add(KEY.public_key(), _sig(n, good), _body(n))
    assert first.results() == verdicts
    assert sorted(bodies) == [_body(n) for n in (0, 1, 2, 3)]
    bodies.clear()
    again = SignatureChecks(2, known)
    again.add(KEY.public_key(), _sig(4, True), _body(4))  # new
    for n, good in enumerate(verdicts):
        again.add(KEY.public_key(), _sig(n, good), _body(n))
    again.add(OTHER.public_key(), _sig(0, True), _body(0))  # another key: checked, fails
    assert again.results() == [True, *verdicts, False]
    # The one that failed is checked again.
    assert sorted(bodies) == [_body(n) for n in (0, 1, 4)]


def test_known_signatures_are_told_apart_by_every_byte() -> None:
    known = sigchecks.VerifiedSignatures()
    public = KEY.public_key()
    sig, body = _sig(1, True), _body(1)
    known.add(known.digest(public, sig, body))
    assert known.digest(public, sig, body) in known
    # The same bytes split otherwise between signature and body are another check.
    assert known.digest(public, sig + body[:1], body[1:]) not in known
    assert known.digest(public, sig, body + b" ") not in known
    assert known.digest(OTHER.public_key(), sig, body) not in known


def test_known_signatures_are_kept_only_up_to_their_limit() -> None:
    known = sigchecks.VerifiedSignatures(most=2)
    digests = [known.digest(KEY.public_key(), _sig(n, True), _body(n)) for n in range(3)]
    for d in digests:
        known.add(d)
    assert [d in known for d in digests] == [True, True, False]


def test_a_key_rebuilt_from_its_bytes_is_the_same_key_to_known_signatures() -> None:
    """A revoked key's retried events each bring a key object of their own."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    known = sigchecks.VerifiedSignatures()
    raw = KEY.public_key().public_bytes_raw()
    sig, body = _sig(1, True), _body(1)
    known.add(known.digest(KEY.public_key(), sig, body))
    assert known.digest(Ed25519PublicKey.from_public_bytes(raw), sig, body) in known
