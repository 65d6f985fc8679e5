"""Render a replay as JSON, CSV or HTML (the chronology a review appends)."""

from __future__ import annotations

import csv
import html
import io
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from .obligations import case_obligations
from .replay import Replay, obligation_dict, outstanding_until, replay

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

    from .core import Ledger
    from .policy import Policy
    from .verify import Envelope

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
    envelopes: Sequence[Envelope] | None = None,
    view: str | None = None,
    reader: str | None = None,
    reason: str = "",
    recorded: bool = False,
) -> Replay:
    """Replay one case of an open ledger (from `envelopes` if the caller has read them).

    With a `view` (full, agency, panel, auditor) its narrative is decrypted from the
    vault as that view may see it (put on the access log as `reader`'s, if given and
    not already `recorded` by the caller); without one, narrative stays sealed.
    """
    if envelopes is None:
        envelopes = ledger.case_envelopes(case_id)
    texts = None
    if view is not None and (view == "panel" or any("narrative" in e.body for e in envelopes)):
        vault = ledger.vault()
        texts = vault.narrative_view(case_id, envelopes, view, reader, reason, recorded=recorded)
    kinds = ledger.agency_kinds()
    return replay(case_id, envelopes, kinds, policy, as_of, basis, narrative=texts)


def case_summaries(
    ledger: Ledger,
    policy: Policy,
    borough: str | None = None,
    agency: str | None = None,
    breached: bool | None = None,
    start: str | None = None,
    end: str | None = None,
    involving: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Each case with its open, breached and met-late obligation counts, filtered.

    Filters are applied before a case is replayed, and listing stops at `limit`, so
    an agency's or a short listing does not replay every case in the ledger.
    `involving` is the caller's own agency (the case must involve it too).
    """
    kinds = ledger.agency_kinds()
    now = datetime.now(UTC)
    out: list[dict[str, Any]] = []
    for c in ledger.cases():
        if limit is not None and len(out) >= limit:
            break
        if any(a and a not in c["agencies"] for a in (agency, involving)):
            continue
        if borough and borough not in c["boroughs"]:
            continue
        if (start and c["last_occurred_at"] < start) or (
            end and c["first_occurred_at"] > end + "T23:59:59Z"
        ):
            continue
        envelopes = ledger.case_envelopes(c["case_id"])
        statuses = [o.status for o in case_obligations(envelopes, kinds, policy, now)[1]]
        c.update(
            open_obligations=statuses.count("open"),
            breached_obligations=statuses.count("breached"),
            met_late=statuses.count("met_late"),
        )
        if breached is not None and breached != bool(c["breached_obligations"]):
            continue
        out.append(c)
    return out


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


# A spreadsheet runs a cell that starts with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> Any:
    """A text cell made inert for spreadsheets: recorded text is an agency's, and a
    panel opening the chronology must not have it run as a formula (OWASP's advice:
    a leading apostrophe)."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def to_csv(r: Replay) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    columns = CSV_COLUMNS[:-1]
    writer.writerows(
        [_cell(row[c]) for c in columns] + [_cell("; ".join(f["detail"] for f in row["flags"]))]
        for row in r.chronology
    )
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


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _rows_html(rows: list[dict[str, Any]]) -> Markup:
    """The chronology's rows, escaped once per cell (a large case has thousands)."""
    out = []
    for row in rows:
        action = str(_highlight(row["action"], row["flags"])) if row["flags"] else _e(row["action"])
        corrects = (
            f"<br><em>Corrects {_e(row['corrects'])}: {_e(row['correction'])}</em>"
            if row["corrects"]
            else ""
        )
        corrected = (
            f"<br><em>Corrected by {_e(row['corrected_by'])}</em>" if row["corrected_by"] else ""
        )
        out.append(
            f'<tr id="{_e(row["event_id"])}">\n<td>{_e(row["date_time"])}</td>'
            f"<td>{_e(row['agency_label'])}</td><td>{_e(row['source'])}</td>\n"
            f"<td>{_e(row['event'])}{corrects}\n{corrected}</td>\n<td>{action}</td>"
            f"<td>{_e(row['outcome'])}</td><td>{_e(row['decision_maker'])}</td>\n</tr>\n"
        )
    return Markup("".join(out))  # noqa: S704 - every value above is escaped


def _obligations_html(obligations: list[dict[str, Any]]) -> Markup:
    out = []
    for o in obligations:
        retro = " (retrospective)" if o["retrospective"] else ""
        late = o["late_days"] or o["outstanding_days"] or ""
        out.append(
            f'<tr class="{_e(o["status"])}"><td>{_e(o["rule"])}: {_e(o["title"])}</td>'
            f"<td>{_e(o['owing_agency'])}</td>\n<td>{_e(o['trigger_event_id'])}</td>"
            f"<td>{_e(o['due'])}</td>\n<td>{_e(o['status'].replace('_', ' '))}{retro}</td>\n"
            f"<td>{_e(late)}</td></tr>\n"
        )
    return Markup("".join(out))  # noqa: S704 - every value above is escaped


def to_html(r: Replay, data: dict[str, Any] | None = None) -> str:
    """The printable chronology; `data` is `replay_dict(r)` if the caller already has it."""
    data = data or replay_dict(r)
    return _ENV.get_template("chronology.html.j2").render(
        r=r,
        rows_html=_rows_html(r.chronology),
        stall=_Obj(r.stall),
        obligations_html=_obligations_html(data["obligations"]),
        flags=data["flags"],
    )


class _Obj(dict[str, Any]):
    """Attribute access for template convenience."""

    def __getattr__(self, name: str) -> Any:
        value = self.get(name)
        return _Obj(value) if isinstance(value, dict) else value
