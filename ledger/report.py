"""Render a replay as JSON, CSV or HTML (the chronology a review appends)."""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from .replay import Replay, obligation_dict, outstanding_until, replay

if TYPE_CHECKING:
    from datetime import datetime

    from .core import Ledger
    from .policy import Policy

CSV_COLUMNS = [
    "date_time",
    "agency_label",
    "source",
    "event",
    "action",
    "outcome",
    "decision_maker",
    "event_id",
    "seq",
    "corrects",
    "corrected_by",
    "flags",
]


def replay_case(
    ledger: Ledger,
    case_id: str,
    policy: Policy,
    as_of: datetime | None = None,
    basis: str = "recorded",
) -> Replay:
    """Replay one case of an open ledger."""
    return replay(
        case_id, ledger.case_envelopes(case_id), ledger.agency_kinds(), policy, as_of, basis
    )


def replay_dict(r: Replay) -> dict[str, Any]:
    return {
        "case_id": r.case_id,
        "as_of": r.as_of.isoformat(),
        "basis": r.basis,
        "policy": {"id": r.policy_id, "hash": r.policy_hash},
        "chronology": r.chronology,
        "obligations": [
            obligation_dict(o, outstanding_until(o, r.events, r.as_of, r.explicit))
            for o in r.obligations
        ],
        "stall": r.stall,
        "flags": [f.as_dict() for f in r.flags],
    }


def to_csv(r: Replay) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in r.chronology:
        writer.writerow({**row, "flags": "; ".join(f["detail"] for f in row["flags"])})
    return out.getvalue()


def _highlight(text: str, flags: list[dict[str, Any]]) -> Markup:
    """The text, escaped, with each flagged span marked."""
    spans = sorted({tuple(f["span"]) for f in flags if f.get("span")})
    pieces: list[str] = []
    at = 0
    for start, end in spans:
        if start < at:
            continue
        pieces += [str(escape(text[at:start])), "<mark>", str(escape(text[start:end])), "</mark>"]
        at = end
    pieces.append(str(escape(text[at:])))
    return Markup("".join(pieces))  # noqa: S704 - every piece of text above is escaped


_ENV = Environment(
    loader=PackageLoader("ledger", "templates"), autoescape=select_autoescape(["html", "j2"])
)


def to_html(r: Replay, data: dict[str, Any] | None = None) -> str:
    """The printable chronology; `data` is `replay_dict(r)` if the caller already has it."""
    data = data or replay_dict(r)
    rows = [
        {
            **row,
            "action_html": _highlight(row["action"], row["flags"])
            if row["flags"]
            else row["action"],
        }
        for row in r.chronology
    ]
    return _ENV.get_template("chronology.html.j2").render(
        r=r, rows=rows, stall=_Obj(r.stall), obligations=data["obligations"], flags=data["flags"]
    )


class _Obj(dict[str, Any]):
    """Attribute access for template convenience."""

    def __getattr__(self, name: str) -> Any:
        value = self.get(name)
        return _Obj(value) if isinstance(value, dict) else value
