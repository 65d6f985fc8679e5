"""The append path as agencies meet it, on both stores."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.audit import audit
from ledger.core import Ledger, Submission
from ledger.errors import Conflict, NotFound, SignatureError, ValidationError
from ledger.keys import Signer, load_key_file
from ledger.verify import b64encode, key_id_of
from tests.conftest import World


def revoke_elsewhere(world: World, key_id: str) -> None:
    """Revoke through another Ledger on the same database, as another process would."""
    other = Ledger.open(world.url, world.keys, create=False)
    try:
        other.revoke_agency_key("police-a", key_id, "lost")
    finally:
        other.close()


def switch_key_and_verify(world: World, new_path: Any) -> None:
    """Sign with police-a's new key from now on; it appends, and the ledger verifies."""
    assert new_path is not None
    world.signers["police-a"] = load_key_file(new_path)
    world.append("police-a")
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_receipts_chain_events_in_order(world: World) -> None:
    first = world.append("police-a", event_type="DISCLOSURE_RECEIVED")
    second = world.append(
        "csc-b",
        event_type="REFERRAL_RECEIVED",
        payload={"referral_source": "6"},
        responds_to=[first.event_id],
    )
    assert (first.seq, second.seq) == (1, 2)
    envs = world.ledger.case_envelopes("C-1")
    assert envs[1].prev_hash == first.event_hash == envs[0].event_hash
    assert envs[1].recorded_at >= envs[0].recorded_at


def test_retry_with_same_body_returns_original_receipt(world: World) -> None:
    submission = world.signed(world.body("police-a"))
    original = world.ledger.append(submission)
    again = world.ledger.append(submission)
    assert again.duplicate and not original.duplicate
    assert (again.seq, again.event_hash, again.recorded_at) == (
        original.seq,
        original.event_hash,
        original.recorded_at,
    )
    assert len(world.ledger.case_envelopes("C-1")) == 1


def test_same_event_id_with_different_body_is_a_conflict(world: World) -> None:
    body = world.body("police-a")
    world.ledger.append(world.signed(body))
    changed = {**body, "occurred_at": "2024-03-04T09:00:00Z"}
    with pytest.raises(Conflict, match=body["event_id"]):
        world.ledger.append(world.signed(changed))


def test_a_conflict_names_where_only_to_the_agency_that_recorded_it(world: World) -> None:
    body = world.body("police-a", case_id="C-secret")
    world.ledger.append(world.signed(body))
    own = {**body, "occurred_at": "2024-03-04T09:00:00Z"}
    with pytest.raises(Conflict, match="case/C-secret seq 1"):
        world.ledger.append(world.signed(own))
    theirs = {**world.body("csc-b", case_id="C-2"), "event_id": body["event_id"]}
    with pytest.raises(Conflict) as refused:
        world.ledger.append(world.signed(theirs))
    assert "C-secret" not in str(refused.value) and "another agency" in str(refused.value)


def test_batch_is_all_or_nothing(world: World) -> None:
    good = world.signed(world.body("police-a", case_id="C-9"))
    bad = world.signed(
        world.body("csc-b", case_id="C-8", event_type="CASE_CLOSED", payload={"reason": "RC99"})
    )
    with pytest.raises(ValidationError, match=r"payload\.reason"):
        world.ledger.append_many([good, bad])
    with pytest.raises(NotFound):
        world.ledger.case_envelopes("C-9")


def test_append_many_spans_cases_in_one_call(world: World) -> None:
    subs = [world.signed(world.body("police-a", case_id=f"K-{n % 3}")) for n in range(30)]
    receipts = world.ledger.append_many(subs)
    assert [r.seq for r in receipts if r.case_id == "K-0"] == list(range(1, 11))
    assert audit(world.ledger.store, world.ledger.ledger_signer().public_bytes).ok


def test_responds_to_must_name_an_event_of_the_same_case(world: World) -> None:
    other = world.append("police-a", case_id="C-2")
    with pytest.raises(ValidationError, match="not an earlier event of case/C-1"):
        world.append("police-a", responds_to=[other.event_id])
    with pytest.raises(ValidationError, match="not an earlier event"):
        world.append("police-a", responds_to=["no-such-event"])


def test_correction_is_a_new_event_and_the_original_stays(world: World) -> None:
    original = world.append("csc-b", event_type="CASE_CLOSED", payload={"reason": "RC8"})
    world.append(
        "csc-b",
        event_type="RECORD_CORRECTED",
        corrects=original.event_id,
        payload={"reason": "wrong code", "replacement": {"reason": "RC9"}},
    )
    types = [e.type for e in world.ledger.case_envelopes("C-1")]
    assert types == ["CASE_CLOSED", "RECORD_CORRECTED"]
    with pytest.raises(ValidationError, match="only RECORD_CORRECTED"):
        world.append("csc-b", corrects=original.event_id)


def test_agency_cannot_sign_as_another_agency(world: World) -> None:
    body = world.body("police-a", key_id=world.signers["csc-b"].key_id)
    with pytest.raises(SignatureError, match="not a key of this agency"):
        world.ledger.append(world.signed(body, world.signers["csc-b"]))


def test_forged_signature_is_refused(world: World) -> None:
    body = world.body("police-a")
    with pytest.raises(SignatureError, match="does not verify"):
        world.ledger.append(world.signed(body, Signer(Ed25519PrivateKey.generate())))
    with pytest.raises(NotFound):
        world.ledger.case_envelopes("C-1")


def test_revoked_key_is_refused_and_rotated_key_works(world: World) -> None:
    old = world.signers["police-a"]
    world.append("police-a")
    _, new_path = world.ledger.add_agency_key("police-a")
    world.ledger.revoke_agency_key("police-a", old.key_id, "rotated")
    with pytest.raises(SignatureError, match="revoked"):
        world.append("police-a")
    switch_key_and_verify(world, new_path)


def test_key_revoked_elsewhere_is_refused_here(world: World) -> None:
    """This process holds the agency as it last saw it; a key revoked by another
    process since is refused all the same, and a key added there is accepted."""
    world.append("police-a")  # the agency is now held here, key valid
    other = Ledger.open(world.url, world.keys, create=False)
    try:
        _, new_path = other.add_agency_key("police-a")
    finally:
        other.close()
    revoke_elsewhere(world, world.signers["police-a"].key_id)
    before = world.ledger.store.catalog.count_events()
    with pytest.raises(SignatureError, match="revoked"):
        world.append("police-a")
    assert world.ledger.store.catalog.count_events() == before
    switch_key_and_verify(world, new_path)


def test_a_repeat_of_an_event_whose_key_was_revoked_since_gets_its_receipt(
    world: World,
) -> None:
    """Same id and body return the original receipt, even after the key is revoked
    (a client retrying across a key rotation must learn its event is recorded), and
    whether or not this process has seen the revocation yet. The signature is still
    checked, against the key the event was recorded under; a new event with the
    revoked key is refused."""
    submission = world.signed(world.body("police-a"))
    original = world.ledger.append(submission)
    revoke_elsewhere(world, world.signers["police-a"].key_id)
    before = world.ledger.store.catalog.count_events()
    for _ in range(2):  # first with this process's view stale, then fresh
        again = world.ledger.append(submission)
        assert again.duplicate
        assert (again.seq, again.event_hash) == (original.seq, original.event_hash)
    forged = Submission(submission.body, bytes(64))
    with pytest.raises(SignatureError, match="does not verify"):
        world.ledger.append(forged)
    with pytest.raises(SignatureError, match="revoked"):
        world.append("police-a")
    assert world.ledger.store.catalog.count_events() == before


def test_a_refused_key_does_not_hide_a_revocation_from_events_checked_before(
    world: World,
) -> None:
    """An event accepted on this process's stale view of its agency, then another
    refused in the same batch (which makes the agency be read afresh): the write
    still finds the agency moved since the first was checked, and refuses it."""
    from ledger.core import Preparation

    world.append("police-a")  # the agency is held here with the key active
    revoke_elsewhere(world, world.signers["police-a"].key_id)
    batch = Preparation(world.ledger, world.ledger.clock())
    batch.add(world.signed(world.body("police-a")))  # the stale view lets it in, for now
    with pytest.raises(SignatureError, match="not a key of this agency"):
        batch.add(world.signed(world.body("police-a", key_id="0" * 32)))
    before = world.ledger.store.catalog.count_events()
    with pytest.raises(SignatureError, match="revoked"):
        world.ledger.append_prepared(batch)
    assert world.ledger.store.catalog.count_events() == before


def test_a_forged_signature_costs_at_most_one_write(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves: list[int] = []
    real_save = world.ledger._save

    def counted(*args: Any, **kwargs: Any) -> Any:
        saves.append(1)
        return real_save(*args, **kwargs)

    monkeypatch.setattr(world.ledger, "_save", counted)
    before = world.ledger.store.catalog.count_events()
    good = [world.signed(world.body("police-a")) for _ in range(3)]
    forged = world.signed(world.body("police-a"))
    with pytest.raises(SignatureError, match="does not verify"):
        world.ledger.append_many([*good, Submission(forged.body, bytes(64))])
    assert len(saves) <= 1  # PostgreSQL checks signatures before its lock: none
    assert world.ledger.store.catalog.count_events() == before


def test_key_revoked_while_a_batch_waits_to_be_written_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch whose keys were checked before a revocation committed, and which is
    written after it, would carry a signature by a revoked key: the check under
    the write lock refuses it."""
    submission = world.signed(world.body("police-a"))
    key_id = world.signers["police-a"].key_id
    save = world.ledger._save_exclusively

    def revoked_meanwhile(*args: Any, **kwargs: Any) -> Any:
        revoke_elsewhere(world, key_id)
        monkeypatch.setattr(world.ledger, "_save_exclusively", save)
        return save(*args, **kwargs)

    monkeypatch.setattr(world.ledger, "_save_exclusively", revoked_meanwhile)
    before = world.ledger.store.catalog.count_events()
    with pytest.raises(SignatureError, match="revoked"):
        world.ledger.append(submission)
    assert world.ledger.store.catalog.count_events() == before + 1  # the revocation only
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_key_revoked_between_reading_heads_and_commit(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process revokes the key just after the batch has confirmed it. On
    PostgreSQL the revocation waits for the writer lock, so the batch commits first,
    signed by a key still valid; on SQLite it commits at once, and the batch, whose
    transaction then finds the agency moved, is refused on its retry. Either way,
    no event is signed by a key revoked before it was recorded."""
    world.append("police-a")
    key_id = world.signers["police-a"].key_id
    load = world.ledger._load_streams
    revoker: list[threading.Thread] = []

    def revoke() -> None:
        revoke_elsewhere(world, key_id)

    def revoked_after_reading(*args: Any, **kwargs: Any) -> Any:
        found = load(*args, **kwargs)
        if not revoker:
            revoker.append(threading.Thread(target=revoke))
            revoker[0].start()
            # On PostgreSQL it waits for the writer lock this batch holds; not on SQLite.
            revoker[0].join(timeout=None if world.url.startswith("sqlite") else 1.0)
        return found

    monkeypatch.setattr(world.ledger, "_load_streams", revoked_after_reading)
    submission = world.signed(world.body("police-a"))
    if world.url.startswith("sqlite"):
        with pytest.raises(SignatureError, match="revoked"):
            world.ledger.append(submission)
    else:
        receipt = world.ledger.append(submission)
        assert receipt.seq == 2
    revoker[0].join(timeout=30)
    assert not revoker[0].is_alive()
    assert world.ledger.agency("police-a").active_key(key_id) is None
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_an_agency_cannot_record_its_own_registration_or_keys(world: World) -> None:
    """Registry events are the ledger's to sign, as `ledger verify` requires; an
    agency adding a key of its own choosing would be refused by verify afterwards."""
    rogue = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    before = world.ledger.store.catalog.count_events()
    for event_type, payload in (
        ("AGENCY_KEY_ADDED", {"public_key": b64encode(rogue)}),
        ("AGENCY_KEY_REVOKED", {"key_id": world.signers["csc-b"].key_id, "reason": "x"}),
    ):
        body = world.body("police-a", event_type=event_type, payload=payload)
        del body["case_id"]
        body["agency_id"] = "police-a"
        with pytest.raises(ValidationError, match="recorded only by the ledger"):
            world.ledger.append(world.signed(body))
    assert world.ledger.store.catalog.count_events() == before


def test_a_batch_may_extend_the_stream_of_an_agency_signing_in_it(world: World) -> None:
    """A system batch holding a ledger-signed key for an agency and an event the
    agency signs: the agency's stream moves by the batch's own event, which is not
    another writer's."""
    world.append("police-a")  # the agency is held here
    new_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    key_event = world.ledger.system_submission(
        {"agency_id": "police-a"},
        "AGENCY_KEY_ADDED",
        {"public_key": b64encode(new_key)},
        event_id="agency-police-a-key-batch",
    )
    seen = world.signed(world.body("police-a"))
    receipts = world.ledger.append_many([key_event, seen], system=True)
    assert [r.duplicate for r in receipts] == [False, False]
    assert world.ledger.agency("police-a").active_key(key_id_of(new_key)) is not None
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_future_and_unknown_type_are_refused(world: World) -> None:
    with pytest.raises(ValidationError, match="5 minutes in the future"):
        world.append("police-a", occurred_at="2999-01-01T00:00:00Z")
    with pytest.raises(ValidationError, match="unknown event type 'TEA_MADE'"):
        world.append("police-a", event_type="TEA_MADE")
    with pytest.raises(ValidationError, match="only the ledger"):
        world.append(
            "police-a",
            event_type="DEADLINE_BREACHED",
            payload={
                "rule": "RS10",
                "trigger_event_id": "x",
                "owing_agency": "police-a",
                "due_at": "2024-01-01T00:00:00Z",
                "policy_hash": "h",
            },
        )


def test_names_in_reference_fields_are_refused(world: World) -> None:
    with pytest.raises(ValidationError, match=r"payload\.child_ref"):
        world.append("police-a", payload={"child_ref": "Jane Smith"})


def test_unknown_agency_is_refused(world: World) -> None:
    body = {**world.body("police-a"), "agency": "nobody"}
    with pytest.raises(NotFound, match="unknown agency 'nobody'"):
        world.ledger.append(world.signed(body, world.signers["police-a"]))


def test_agency_registered_twice_is_a_conflict(world: World) -> None:
    with pytest.raises(Conflict):
        world.ledger.register_agency("police-a", "police")


def count_screens(world: World, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the groups the ledger is asked to screen one by one, as they come."""
    screened: list[int] = []
    real_screen = world.ledger.screen

    def screen(subs: list[Submission]) -> Any:
        screened.append(len(subs))
        return real_screen(subs)

    monkeypatch.setattr(world.ledger, "screen", screen)
    return screened


def test_group_commit_answers_bad_events_alone_and_commits_the_rest_together(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    from concurrent.futures import Future

    from ledger.core import Receipt, Submission
    from ledger.errors import Conflict, SignatureError, ValidationError
    from ledger.groupcommit import GroupCommitter

    one_by_one: list[str] = []
    real_append = world.ledger.append

    def counted(submission: Submission) -> Receipt:
        one_by_one.append(submission.body["event_id"])
        return real_append(submission)

    monkeypatch.setattr(world.ledger, "append", counted)
    screened = count_screens(world, monkeypatch)
    committer = GroupCommitter(world.ledger, window_s=0.5)
    try:
        good = [world.signed(world.body("police-a")) for _ in range(8)]
        forged = world.signed(world.body("police-a"))
        forged = Submission(forged.body, b"\0" * 64)
        invalid = world.signed(world.body("police-a", event_type="NOT_A_TYPE"))
        futures: list[Future[Receipt]] = [committer.submit(s) for s in [*good, forged, invalid]]
        receipts = [f.result(timeout=10) for f in futures[:8]]
        assert [r.seq for r in receipts] == list(range(1, 9))
        assert isinstance(futures[8].exception(timeout=10), SignatureError)
        assert isinstance(futures[9].exception(timeout=10), ValidationError)
        assert one_by_one == []  # the good ones went together, not one transaction each
        assert screened == []  # split by the signature results at hand, not checked again
        # Events refused only together (one id, two bodies) are then tried one by one.
        twin = world.body("police-a")
        clash = [world.signed(twin), world.signed({**twin, "occurred_at": "2024-03-04T09:00:00Z"})]
        outcomes = [committer.submit(s) for s in clash]
        assert outcomes[0].result(timeout=10).seq == 9
        assert isinstance(outcomes[1].exception(timeout=10), Conflict)
        assert one_by_one == [twin["event_id"], twin["event_id"]]
    finally:
        committer.close()


def test_group_commit_refuses_an_invalid_event_as_it_arrives(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that does not validate, or names a key the agency does not hold, is
    answered as it arrives and left out: the rest commit in one write that does
    not fail first."""
    from ledger.groupcommit import GroupCommitter

    screened = count_screens(world, monkeypatch)
    committer = GroupCommitter(world.ledger, window_s=0.5)
    try:
        good = [world.signed(world.body("police-a")) for _ in range(4)]
        invalid = world.signed(world.body("police-a", event_type="NOT_A_TYPE"))
        stranger = world.signed(world.body("police-a", key_id="0" * 32))
        futures = [committer.submit(s) for s in [good[0], invalid, *good[1:3], stranger, good[3]]]
        assert isinstance(futures[1].exception(timeout=10), ValidationError)
        assert isinstance(futures[4].exception(timeout=10), SignatureError)
        seqs = [f.result(timeout=10).seq for f in (futures[0], futures[2], futures[3], futures[5])]
        assert seqs == [1, 2, 3, 4]
        assert screened == []  # no write was refused and split
        assert committer.batches == 1
    finally:
        committer.close()


def test_group_committer_stops_waiting_once_as_many_as_last_time_have_come(
    world: World,
) -> None:
    """Clients that wait for each answer come back together: once a gathering has as
    many as the last one took, it commits without waiting out its window, still as
    one transaction; a lone client is not held for the window on every append."""
    from ledger.groupcommit import GroupCommitter

    window = 0.5
    committer = GroupCommitter(world.ledger, window_s=window)
    try:
        first = [committer.submit(world.signed(world.body("police-a"))) for _ in range(4)]
        assert [f.result(timeout=10).seq for f in first] == [1, 2, 3, 4]
        assert committer.batches == 1  # the first gathering waits out its window
        start = time.monotonic()
        again = [committer.submit(world.signed(world.body("police-a"))) for _ in range(4)]
        assert [f.result(timeout=10).seq for f in again] == [5, 6, 7, 8]
        assert time.monotonic() - start < window * 0.8  # not held for the window
        assert committer.batches == 2  # the four together again
    finally:
        committer.close()
    lone = GroupCommitter(world.ledger, window_s=window)
    try:
        assert lone.submit(world.signed(world.body("police-a"))).result(timeout=10).seq == 9
        start = time.monotonic()
        for seq in range(10, 15):  # each sent once the last is answered
            assert lone.submit(world.signed(world.body("police-a"))).result(timeout=10).seq == seq
        assert time.monotonic() - start < window * 2  # five windows' wait before
        assert lone.batches == 6
    finally:
        lone.close()


def hold_append_many(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """`append_many` made to wait, once called (`busy` set), until `release` is set: a
    batch holds the committer while singles queue up behind it."""
    busy = threading.Event()
    release = threading.Event()
    real_append_many = world.ledger.append_many

    def held(submissions: Any, **kwargs: Any) -> Any:
        busy.set()
        release.wait(10)
        return real_append_many(submissions, **kwargs)

    monkeypatch.setattr(world.ledger, "append_many", held)
    return busy, release


def test_group_committer_skips_a_request_given_up_on(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request cancelled while queued (its client gone) is skipped; the committer
    carries on answering the others."""
    from ledger.groupcommit import GroupCommitter

    busy, release = hold_append_many(world, monkeypatch)
    committer = GroupCommitter(world.ledger, window_s=0.01)
    try:
        first = committer.submit_batch([world.signed(world.body("police-a"))])
        assert busy.wait(10)
        gone = committer.submit(world.signed(world.body("police-a")))
        assert gone.cancel()
        release.set()
        assert first.result(timeout=10)[0].seq == 1
        after = committer.submit(world.signed(world.body("police-a")))
        assert after.result(timeout=10).seq == 2
    finally:
        release.set()
        committer.close()


def test_group_committer_answers_a_loop_once_for_a_whole_batch(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requests awaited on an event loop get their receipts through it, a committed
    batch's all in one hand-over; one refused on its own is answered as it comes,
    and one given up on while queued is skipped, its event not written."""
    import asyncio

    from ledger.errors import ValidationError
    from ledger.groupcommit import GroupCommitter

    busy, release = hold_append_many(world, monkeypatch)
    committer = GroupCommitter(world.ledger, window_s=0.5)
    skipped = world.signed(world.body("police-a"))

    async def run() -> tuple[list[Any], list[Any], int]:
        loop = asyncio.get_running_loop()
        handovers = 0
        real_call = loop.call_soon_threadsafe

        def counted(*args: Any, **kwargs: Any) -> Any:
            nonlocal handovers
            handovers += 1
            return real_call(*args, **kwargs)

        monkeypatch.setattr(loop, "call_soon_threadsafe", counted)
        # A batch holds the committer while the singles queue up behind it.
        first = asyncio.wrap_future(committer.submit_batch([world.signed(world.body("police-a"))]))
        while not busy.is_set():
            await asyncio.sleep(0.01)
        gone = committer.submit_awaitable(skipped)
        gone.cancel()
        waiting = [
            committer.submit_awaitable(world.signed(world.body("police-a"))) for _ in range(5)
        ]
        invalid = committer.submit_awaitable(
            world.signed(world.body("police-a", event_type="NOT_A_TYPE"))
        )
        before = handovers
        release.set()
        await first
        results = await asyncio.gather(*waiting, invalid, return_exceptions=True)
        return results[:5], results[5:], handovers - before

    try:
        receipts, refused, handovers = asyncio.run(run())
    finally:
        release.set()
        committer.close()
    assert [r.seq for r in receipts] == [2, 3, 4, 5, 6]  # the one given up on was skipped
    assert isinstance(refused[0], ValidationError)
    # One for the refusal as it came, one for the five committed together; the batch
    # before them is a thread's future, which the test's own wrap hands over (one more).
    assert handovers == 3
    assert world.ledger.store.catalog.lookup([skipped.body["event_id"]]) == {}


def test_group_committer_commits_a_batch_alone_and_all_or_nothing(world: World) -> None:
    from ledger.core import Submission
    from ledger.errors import SignatureError
    from ledger.groupcommit import GroupCommitter

    committer = GroupCommitter(world.ledger, window_s=0.2)
    try:
        singles = [committer.submit(world.signed(world.body("police-a"))) for _ in range(3)]
        batch = [world.signed(world.body("police-a")) for _ in range(4)]
        whole = committer.submit_batch(batch)
        after = committer.submit(world.signed(world.body("police-a")))
        assert [f.result(timeout=10).seq for f in singles] == [1, 2, 3]
        assert [r.seq for r in whole.result(timeout=10)] == [4, 5, 6, 7]
        assert after.result(timeout=10).seq == 8
        # One forged event refuses its whole batch, and nothing of it is written.
        bad = [world.signed(world.body("police-a")) for _ in range(3)]
        bad[1] = Submission(bad[1].body, b"\0" * 64)
        assert isinstance(committer.submit_batch(bad).exception(timeout=10), SignatureError)
        assert committer.submit(world.signed(world.body("police-a"))).result(timeout=10).seq == 9
        assert [e.seq for e in world.ledger.case_envelopes("C-1")] == list(range(1, 10))
    finally:
        committer.close()


def test_a_repeat_recorded_between_lookup_and_write_gets_the_original_receipt(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Which ids are known is read before the write lock; the database's unique event
    id catches a repeat another process records in between, and the retry finds it."""
    from ledger.core import Ledger

    other = Ledger.open(world.url, world.keys, create=False)
    try:
        submission = world.signed(world.body("police-a"))
        real = world.ledger._known
        raced: list[bool] = []

        def racing(items: Any, own_ids: bool) -> Any:
            known = real(items, own_ids)
            if not raced:
                raced.append(other.append(submission).duplicate)  # recorded meanwhile
            return known

        monkeypatch.setattr(world.ledger, "_known", racing)
        receipt = world.ledger.append(submission)
        assert raced == [False]
        assert receipt.duplicate and receipt.seq == 1
        assert [e.event_id for e in world.ledger.case_envelopes("C-1", cached=False)] == [
            submission.body["event_id"]
        ]
    finally:
        other.close()


def _race(ledgers: Sequence[Any], batch: list[Any]) -> list[Any]:
    """Each ledger appends `batch` at the same moment; each one's receipts or error."""
    barrier = threading.Barrier(len(ledgers))
    results: list[Any] = [None] * len(ledgers)

    def write(n: int) -> None:
        barrier.wait()
        try:
            results[n] = [(r.event_id, r.event_hash) for r in ledgers[n].append_many(batch)]
        except Exception as e:
            results[n] = e

    threads = [threading.Thread(target=write, args=(n,)) for n in range(len(ledgers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_the_same_batch_from_two_writers_at_once_is_recorded_once(world: World) -> None:
    """An agency's retry can reach a second worker while the first still writes: one
    records the batch, the other answers with the same receipts, never an error."""
    from ledger.core import Ledger

    other = Ledger.open(world.url, world.keys, create=False)
    try:
        for _ in range(15):
            batch = [world.signed(world.body("police-a", case_id=f"C-{n}")) for n in range(5)]
            first, second = _race([world.ledger, other], batch)
            assert first == second, (first, second)
    finally:
        other.close()
    assert audit(world.ledger.store, world.ledger.ledger_signer().public_bytes).ok


def test_a_stream_another_writer_extended_is_chained_after_its_event(world: World) -> None:
    """This process's cached head of C-1 goes stale when another writer appends; the
    next append here still follows the other's event, not the stale head."""
    world.append("police-a")  # cached here at seq 1
    world.follows_another_writer()


def test_a_repeat_in_a_batch_is_answered_with_its_original_receipt(world: World) -> None:
    """A batch's own ids are not looked up on a first attempt; a stored repeat among
    new events is still answered as one, and the new events are recorded once."""
    first = world.signed(world.body("police-a"))
    original = world.ledger.append(first)
    fresh = [world.signed(world.body("police-a")) for _ in range(2)]
    receipts = world.ledger.append_many([fresh[0], first, fresh[1]])
    assert receipts[1].duplicate and receipts[1].event_hash == original.event_hash
    assert [r.seq for r in receipts] == [2, 1, 3]
    assert len(world.ledger.case_envelopes("C-1", cached=False)) == 3


def test_a_reused_event_id_is_a_conflict_whatever_else_its_body_gets_wrong(
    world: World,
) -> None:
    """The id names what is already recorded: reusing it with a body that would also be
    refused for another reason (here, a reference to an unknown event) is a conflict."""
    first = world.append("police-a")
    body = world.body("police-a", responds_to=["no-such-event"])
    body["event_id"] = first.event_id
    with pytest.raises(Conflict, match="already recorded"):
        world.ledger.append(world.signed(body))


def test_current_brings_the_newest_event_only_where_the_version_held_is_old(
    world: World,
) -> None:
    """The one query an append makes under the write lock: each stream's latest
    version, and its newest stored bytes unless the caller holds that version."""
    from uuid import uuid4

    from ledger.verify import stream_id

    for _ in range(3):
        world.append("police-a")
    world.append("police-a", case_id="C-2")
    one, two, nowhere = stream_id("case/C-1"), stream_id("case/C-2"), uuid4()
    absent = [(uuid4(), 0) for _ in range(300)]  # past one query's worth of streams
    found = world.ledger.store.catalog.current([*absent, (one, 3), (two, 0), (nowhere, 0)])
    assert set(found) == {one, two}
    assert found[one] == (3, None)
    assert found[two] == (1, world.raw.state("case/C-2", 1))
    assert nowhere not in found
    stale = world.ledger.store.catalog.current([(one, 2)])
    assert stale == {one: (3, world.raw.state("case/C-1", 3))}


def test_the_recorder_stores_rows_as_given_with_notification_ids_in_that_order(
    world: World,
) -> None:
    """The insert statement (on PostgreSQL, four binary arrays rather than
    eventsourcing's composite array): each row as given, notification ids handed out
    in the order given and, where the recorder returns them, returned in that order."""
    from uuid import uuid4

    from eventsourcing.persistence import StoredEvent

    recorder = world.ledger.store.app.recorder
    before = recorder.max_notification_id() or 0
    a, b = uuid4(), uuid4()
    rows = [
        StoredEvent(a, 1, "t:A", bytes(range(256)) * 4),
        StoredEvent(b, 1, "t:B", b"\x00'\"{}\\\n"),
        StoredEvent(a, 2, "t:A", b""),
        StoredEvent(b, 2, "t:B", "é\u2028".encode()),
    ]
    returned = recorder.insert_events(rows)
    found = recorder.select_notifications(before + 1, 10)
    assert [
        (UUID(str(n.originator_id)), n.originator_version, n.topic, n.state) for n in found
    ] == [(r.originator_id, r.originator_version, r.topic, r.state) for r in rows]
    ids = [n.id for n in found]
    assert ids == sorted(ids)
    if not world.ledger.store.url.is_sqlite:
        assert list(returned or []) == ids


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
def test_repeats_refused_inside_the_write_pipeline_leave_its_connections_usable(
    world: World,
) -> None:
    """psycopg prepares a statement on its sixth run and, in pipeline mode, counts it
    prepared before the server has done so; a repeat refused earlier in the same
    pipeline (a retry another worker recorded first) makes the server skip that, and
    the connection then fails on every later run: "prepared statement does not
    exist", an unavailable database to the caller. Each round here writes new events
    and a repeat, on whichever pooled connection comes up, past every sixth run."""
    for _ in range(40):
        first = world.signed(world.body("police-a"))
        world.ledger.append(first)
        fresh = [world.signed(world.body("police-a")) for _ in range(2)]
        receipts = world.ledger.append_many([fresh[0], first, fresh[1]])
        assert [r.duplicate for r in receipts] == [False, True, False]
    assert audit(world.ledger.store, world.ledger.ledger_signer().public_bytes).ok
