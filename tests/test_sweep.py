"""The watchdog on both stores: inaction becomes a signed fact, exactly once."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

from ledger.audit import audit
from ledger.core import Ledger
from ledger.events import format_time
from ledger.policy import load_policy
from ledger.report import replay_case
from ledger.sweep import SweepSummary, sweep
from tests.conftest import CHILD, World

POLICY = load_policy()


def live_case(world: World) -> datetime:
    """Two agencies that joined four days ago record a disclosure to police and a child
    found, then nothing more (the ledger clock is set back to simulate it)."""
    from ledger.keys import load_key_file

    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=4)
    world.ledger.clock = lambda: t0
    for agency, kind in (("police-old", "police"), ("csc-old", "csc")):
        _, path = world.ledger.register_agency(agency, kind, borough="Lambeth")
        assert path is not None
        world.signers[agency] = load_key_file(path)
    world.append(
        "police-old",
        event_type="DISCLOSURE_RECEIVED",
        occurred_at=format_time(t0),
        payload={"child_ref": CHILD, "sexual_offence": True, "child_age": 14},
    )
    world.append(
        "csc-old", event_type="FOUND", occurred_at=format_time(t0), payload={"child_ref": CHILD}
    )
    world.ledger.clock = lambda: datetime.now(UTC)
    return t0


def breaches(world: World, case_id: str = "C-1") -> list[Any]:
    return [e for e in world.ledger.case_envelopes(case_id) if e.type == "DEADLINE_BREACHED"]


def test_sweep_records_each_live_breach_once(world: World) -> None:
    t0 = live_case(world)
    now = datetime.now(UTC)
    first = sweep(world.ledger, POLICY, now)
    assert (first.breached, first.appended) == (2, 2)
    found = {e.body["payload"]["rule"]: e for e in breaches(world)}
    assert set(found) == {"RS10", "RS09"}
    rs10 = found["RS10"].body
    assert rs10["agency"] == "ledger"
    assert rs10["occurred_at"] == format_time(t0 + timedelta(hours=24))  # when it happened
    assert rs10["payload"]["owing_agency"] == "police-old"
    assert rs10["payload"]["policy_hash"] == POLICY.hash
    second = sweep(world.ledger, POLICY, now)
    assert second.appended == 0 and second.already_recorded == 2
    assert len(breaches(world)) == 2
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_concurrent_sweeps_append_each_breach_once(world: World) -> None:
    live_case(world)
    for n in range(5):  # more cases, so the two sweeps overlap
        world.append(
            "police-a",
            case_id=f"X-{n}",
            event_type="DISCLOSURE_RECEIVED",
            occurred_at=format_time(datetime.now(UTC) - timedelta(days=3)),
            payload={"child_ref": CHILD, "sexual_offence": True},
        )
    now = datetime.now(UTC)
    results: list[SweepSummary] = []
    errors: list[BaseException] = []

    def run() -> None:
        ledger = Ledger.open(world.url, world.keys, create=False)
        try:
            results.append(sweep(ledger, POLICY, now))
        except BaseException as e:
            errors.append(e)
        finally:
            ledger.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(breaches(world)) == 2
    assert sum(r.appended for r in results) == 2  # the X-n disclosures are retrospective
    report = audit(world.ledger.store, world.ledger.ledger_signer().public_bytes)
    assert report.ok, report.problems


def test_historic_records_breach_only_in_replay(world: World) -> None:
    world.append(
        "police-a",
        case_id="OLD",
        event_type="DISCLOSURE_RECEIVED",
        occurred_at="2019-03-03T14:05:00Z",
        payload={"child_ref": CHILD, "sexual_offence": True},
    )
    summary = sweep(world.ledger, POLICY, datetime.now(UTC))
    assert summary.retrospective == 1 and summary.appended == 0
    r = replay_case(world.ledger, "OLD", POLICY)
    rs10 = [o for o in r.obligations if o.rule.id == "RS10"]
    assert rs10[0].status == "breached" and rs10[0].retrospective


def test_replay_as_of_before_the_disclosure_shows_no_stall(world: World) -> None:
    t0 = live_case(world)
    sweep(world.ledger, POLICY, datetime.now(UTC))
    before = replay_case(world.ledger, "C-1", POLICY, t0 - timedelta(hours=1), "occurred")
    assert before.stall["first_stall"] is None and before.events == []
    after = replay_case(world.ledger, "C-1", POLICY)
    assert after.stall["first_stall"]["rule"] == "RS10"
    assert "did not record the crime within 24 hours" in after.stall["first_stall"]["sentence"]
