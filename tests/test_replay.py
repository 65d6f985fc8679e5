"""Replay: the demo's stories, as-of equivalence (property), outputs and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.cli import main
from ledger.core import Ledger, Submission
from ledger.demo import AGENCIES, scripts
from ledger.keys import load_key_file
from ledger.policy import load_policy
from ledger.replay import replay
from ledger.report import CSV_COLUMNS, replay_case, replay_dict, to_csv, to_html

POLICY = load_policy()
BASE = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ledger]:
    """The demo cases, each event recorded a minute after the last (ledger clock stepped)."""
    d = tmp_path_factory.mktemp("demo")
    ledger = Ledger.open(f"sqlite:///{d}/demo.sqlite", d / "keys")
    ledger.clock = lambda: BASE
    ledger.init("demo.test/log")
    signers = {}
    for agency, kind, borough, name in AGENCIES:
        _, path = ledger.register_agency(agency, kind, borough=borough, name=name)
        assert path is not None
        signers[agency] = load_key_file(path)
    minute = 0
    for script in scripts():
        for body in script.events:
            minute += 1
            ledger.clock = lambda m=minute: BASE + timedelta(minutes=m)  # type: ignore[misc]
            ledger.append(Submission.signed(body, signers[body["agency"]]))
    yield ledger
    ledger.close()


def test_rape_disclosure_case_shows_police_as_first_stall(demo: Ledger) -> None:
    r = replay_case(demo, "DEMO-LAM-0001", POLICY, view="full")
    first = r.stall["first_stall"]
    assert first["rule"] == "RS10"
    assert first["owing_agency"] == "met-police-south"
    assert first["outstanding_days"] == 412
    assert first["sentence"] == (
        "Police (met-police-south) did not record the crime within 24 hours of the rape "
        "disclosure on 3 March 2024: never done (412 days)"
    )
    assert any(f.kind == "language" and f.text == "lifestyle choices" for f in r.flags)


def test_well_handled_case_shows_no_breach(demo: Ledger) -> None:
    r = replay_case(demo, "DEMO-SWK-0005", POLICY)
    statuses = {o.rule.id: o.status for o in r.obligations}
    assert len(statuses) >= 10
    assert set(statuses.values()) == {"met"}
    assert r.stall["first_stall"] is None


def test_eleven_year_old_case_flags_language_and_repeated_nfa(demo: Ledger) -> None:
    r = replay_case(demo, "DEMO-SWK-0002", POLICY, view="full")
    language = {f.text: f for f in r.flags if f.kind == "language"}
    assert language["seeking out older men"].severity == "high"
    assert "under 13" in language["seeking out older men"].detail
    assert {f.rule for f in r.flags if f.kind == "pattern"} == {"P1", "P2"}
    row = next(x for x in r.chronology if x["flags"])
    span = row["flags"][0]["span"]
    assert row["action"][span[0] : span[1]] == row["flags"][0]["text"]


def test_child_victim_recorded_as_suspect_is_flagged(demo: Ledger) -> None:
    r = replay_case(demo, "DEMO-LAM-0003", POLICY)
    assert [f.kind for f in r.flags].count("victim_as_suspect") == 1


def test_correction_shown_beside_what_it_corrects(demo: Ledger) -> None:
    rows = replay_case(demo, "DEMO-CRO-0006", POLICY).chronology
    corrected = next(r for r in rows if r["type"] == "LADO_OUTCOME")
    correction = next(r for r in rows if r["type"] == "RECORD_CORRECTED")
    assert corrected["corrected_by"] == correction["event_id"]
    assert correction["corrects"] == corrected["event_id"]
    assert correction["correction"] == {"outcome": "substantiated"}


def recorded_times(ledger: Ledger) -> list[datetime]:
    times = {
        datetime.fromisoformat(e.recorded_at.replace("Z", "+00:00"))
        for c in ledger.iter_case_ids()
        for e in ledger.case_envelopes(c)
    }
    return sorted(times)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_replay_as_of_equals_replay_of_what_was_recorded_by_then(
    demo: Ledger, data: st.DataObject
) -> None:
    case_id = data.draw(st.sampled_from(sorted(demo.iter_case_ids())))
    envelopes = demo.case_envelopes(case_id)
    times = recorded_times(demo)
    at = data.draw(st.sampled_from(times)) + timedelta(seconds=data.draw(st.integers(-90, 90)))
    kinds = demo.agency_kinds()
    whole = replay(case_id, envelopes, kinds, POLICY, at, "recorded")
    cutoff = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    known = [e for e in envelopes if e.recorded_at <= cutoff]
    partial = replay(case_id, known, kinds, POLICY, at, "recorded")
    assert replay_dict(whole) == replay_dict(partial)


def test_outputs_json_csv_html(demo: Ledger) -> None:
    r = replay_case(demo, "DEMO-SWK-0002", POLICY, view="full")
    assert json.loads(json.dumps(replay_dict(r)))["case_id"] == "DEMO-SWK-0002"
    csv_text = to_csv(r)
    assert csv_text.splitlines()[0].startswith("date_time,agency_label,source,event,action")
    assert len(csv_text.splitlines()) == len(r.chronology) + 1
    page = to_html(r)
    assert "<mark>seeking out older men</mark>" in page
    assert "First stall:" in page and "@page { size: A4" in page


def test_csv_cells_that_a_spreadsheet_would_run_are_made_inert(demo: Ledger) -> None:
    import csv
    import io

    r = replay_case(demo, "DEMO-SWK-0002", POLICY, view="full")
    row = r.chronology[0]
    row["decision_maker"] = '=HYPERLINK("http://example.invalid","x")'
    row["action"] = "@SUM(A1:A9)"
    row["outcome"] = "-2+3"
    cells = dict(zip(CSV_COLUMNS, list(csv.reader(io.StringIO(to_csv(r))))[1], strict=True))
    assert cells["decision_maker"] == '\'=HYPERLINK("http://example.invalid","x")'
    assert cells["action"] == "'@SUM(A1:A9)" and cells["outcome"] == "'-2+3"
    assert cells["seq"] == str(row["seq"])  # numbers and plain text are untouched
    assert cells["event_id"] == row["event_id"]


def cli(demo: Ledger, *argv: str) -> list[str]:
    url = f"sqlite:///{demo.store.url.path}"
    return [*argv, "--db", url, "--keys", str(demo.keys_dir)]


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["replay", "NOPE"], 1, "no case 'NOPE'"),
        (["replay", "DEMO-LAM-0001", "--as-of", "last tuesday"], 2, "is not a date or time"),
        (["replay", "DEMO-LAM-0001", "--basis", "rumour"], 2, "invalid choice"),
        (["sweep", "--now", "soon"], 2, "is not a date or time"),
    ],
)
def test_replay_and_sweep_errors_are_one_line(
    demo: Ledger, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, needle: str
) -> None:
    assert main(cli(demo, *argv)) == code
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


def test_policy_with_unknown_event_type_is_a_usage_error(
    demo: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.policy import DEFAULT_POLICY

    bad = tmp_path / "policy.yaml"
    bad.write_text(DEFAULT_POLICY.read_text().replace("[CSPR_PUBLISHED]", "[CSPR_DONE]"))
    assert main(cli(demo, "replay", "DEMO-LAM-0001", "--policy", str(bad))) == 2
    err = capsys.readouterr().err.strip()
    assert "rule RS21, field satisfied_by" in err and "CSPR_DONE" in err


def test_cases_lists_obligations_and_filters(
    demo: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(cli(demo, "cases", "--json", "--borough", "Croydon")) == 0
    cases: list[dict[str, Any]] = json.loads(capsys.readouterr().out)
    assert {c["case_id"] for c in cases} == {"DEMO-CRO-0004", "DEMO-CRO-0006"}
    assert next(c for c in cases if c["case_id"] == "DEMO-CRO-0004")["breached_obligations"] == 2
    assert main(cli(demo, "cases", "--json", "--agency", "cps-london-south")) == 0
    assert [c["case_id"] for c in json.loads(capsys.readouterr().out)] == ["DEMO-SWK-0005"]
