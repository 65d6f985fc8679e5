"""Token lookups under concurrency: one database lookup per token at a time, and a
revocation that no lookup begun before it can undo."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ledger.core import Ledger
from ledger.tokens import Principal, Role, TokenStore, token_hash

WAITERS = 16


@pytest.fixture
def store(db_url: str, tmp_path: Path) -> Iterator[tuple[TokenStore, str]]:
    ledger = Ledger.open(db_url, tmp_path / "keys")
    ledger.init("test/tokens")
    ledger.register_agency("police-a", "police", borough="Test")
    token = ledger.tokens.issue("agency:police-a", "agency", "police-a")
    try:
        yield ledger.tokens, token
    finally:
        ledger.close()


POLICE = Principal("agency:police-a", Role.AGENCY, "police-a")


def _gated(
    tokens: TokenStore, monkeypatch: pytest.MonkeyPatch, first: Callable[[str], Principal | None]
) -> tuple[list[str], threading.Event]:
    """Make the first database lookup run `first` and then wait for `release`; later
    ones run as they are. Returns the digests looked up, and `release`."""
    real = tokens._lookup
    calls: list[str] = []
    release = threading.Event()

    def lookup(digest: str) -> Principal | None:
        calls.append(digest)
        if len(calls) > 1:
            return real(digest)
        try:
            return first(digest)
        finally:
            assert release.wait(10)

    monkeypatch.setattr(tokens, "_lookup", lookup)
    return calls, release


class Requests:
    """`n` threads, each asking `work` once; `join` waits for them all."""

    def __init__(self, n: int, work: Callable[[], Principal | None]) -> None:
        self.answers: list[Principal | str | None] = [None] * n
        self.threads = [threading.Thread(target=self._run, args=(i, work)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i: int, work: Callable[[], Principal | None]) -> None:
        try:
            self.answers[i] = work()
        except RuntimeError as e:
            self.answers[i] = str(e)

    def join(self) -> list[Principal | str | None]:
        for t in self.threads:
            t.join(10)
            assert not t.is_alive()
        return self.answers


def _settle(calls: list[str], most: int) -> None:
    """Give the other threads time to arrive: they would look up for themselves
    (reaching `most` calls) or wait on the first lookup."""
    deadline = time.monotonic() + 1.0
    while len(calls) < most and time.monotonic() < deadline:
        time.sleep(0.01)


def test_requests_for_one_token_share_one_database_lookup(
    store: tuple[TokenStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens, token = store
    calls, release = _gated(tokens, monkeypatch, tokens._lookup)
    requests = Requests(WAITERS, lambda: tokens.lookup(token))
    _settle(calls, WAITERS)
    release.set()
    answers = requests.join()
    assert calls == [token_hash(token)]
    assert answers == [POLICE] * WAITERS
    assert tokens.cached(token) == (True, POLICE)


def test_a_failed_lookup_is_tried_again_by_each_request_that_waited_on_it(
    store: tuple[TokenStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens, token = store

    def fails(digest: str) -> Principal | None:
        raise RuntimeError("database gone")

    calls, release = _gated(tokens, monkeypatch, fails)
    # The first thread leads; the others wait on it, then look up for themselves.
    requests = Requests(WAITERS, lambda: tokens.lookup(token))
    _settle(calls, WAITERS)
    release.set()
    answers = requests.join()
    assert sorted(map(str, answers)) == sorted(["database gone"] + [str(POLICE)] * (WAITERS - 1))
    assert len(calls) == WAITERS


def test_a_lookup_begun_before_a_revocation_does_not_keep_its_answer(
    store: tuple[TokenStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lookup read the token before the revocation committed; its answer goes to
    the request that asked (which came first), but is not kept for later ones."""
    tokens, token = store
    read = threading.Event()
    real = tokens._lookup

    def reads_then_waits(digest: str) -> Principal | None:
        found = real(digest)
        read.set()
        return found

    calls, release = _gated(tokens, monkeypatch, reads_then_waits)
    requests = Requests(1, lambda: tokens.lookup(token))
    assert read.wait(10)
    tokens.revoke("agency:police-a")
    # A request after the revocation does not wait on the lookup begun before it.
    assert tokens.lookup(token) is None
    release.set()
    assert requests.join() == [POLICE]
    assert tokens.cached(token) != (True, POLICE)
    assert tokens.lookup(token) is None
    assert len(calls) == 2  # the last answer was kept from the lookup after revoking
