"""Publication-safe outputs and cross-borough link suggestions, on the demo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ledger.cli import main
from ledger.core import Ledger
from ledger.demo import HOUSE, load_demo
from ledger.policy import load_policy
from ledger.publication import publication_rows, publish_stats, suggest_links, suppress
from ledger.report import replay_case


@pytest.fixture
def demo(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(f"sqlite:///{tmp_path}/d.sqlite", tmp_path / "keys")
    load_demo(ledger, "pub.test/log")
    return ledger


def test_small_counts_are_suppressed() -> None:
    assert [suppress(n) for n in (0, 1, 5, 6)] == [0, "c", "c", 6]


def test_publication_chronology_names_nobody_and_withholds_narrative(demo: Ledger) -> None:
    rows = publication_rows(replay_case(demo, "DEMO-SWK-0002", load_policy()))
    text = json.dumps(rows)
    assert "child_" not in text and "staff_" not in text and "T08:50" not in text
    assert "seeking out older men" not in text
    assert rows[0]["month"] == "September 2023" and "Child A" in rows[0]["people"]
    assert any(r["action"] == "[narrative withheld for publication]" for r in rows)


def test_published_statistics_suppress_counts(demo: Ledger) -> None:
    stats = publish_stats(demo, load_policy())
    assert all(row["cases"] == "c" for row in stats["cases_per_month_per_borough"])
    assert {"agency_kind": "police", "rule": "RS10", "breaches": "c"} in stats[
        "breaches_per_agency_kind_per_rule"
    ]


def test_the_shared_address_links_lambeth_and_croydon(demo: Ledger) -> None:
    links = {link.ref: link for link in suggest_links(demo)}
    house = links[HOUSE]
    assert {"DEMO-LAM-0003", "DEMO-CRO-0004"} <= set(house.cases)
    assert {"Lambeth", "Croydon"} <= set(house.boroughs)
    assert any(e.startswith("DEMO-CRO-0004-") for e in house.events)


def test_a_link_decision_is_an_event_and_closes_the_suggestion(
    demo: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--db", f"sqlite:///{demo.store.url.path}", "--keys", str(demo.keys_dir)]
    pair = sorted(next(link for link in suggest_links(demo) if link.ref == HOUSE).cases)[:2]
    others = [link for link in suggest_links(demo) if link.ref == HOUSE]
    assert others
    for a in pair[1:]:
        assert (
            main(
                [
                    "links",
                    "confirm",
                    pair[0],
                    a,
                    "--ref",
                    HOUSE,
                    "--reason",
                    "same flat named by both children",
                    "--by",
                    "panel-1",
                    *argv,
                ]
            )
            == 0
        )
    capsys.readouterr()
    flags = [e for e in demo.case_envelopes(pair[0]) if e.type == "FLAG_RAISED"]
    assert flags and flags[-1].body["payload"]["kind"] == "linkage"
    assert (
        main(["links", "reject", pair[0], pair[1], "--ref", HOUSE, "--reason", "again", *argv]) == 1
    )
    assert main(["stats", *argv]) == 2
