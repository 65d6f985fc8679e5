"""`ledger`: the command line agencies, operators and auditors script against.

Exit codes: 0 success, 1 a refusal or a failed verification, 2 a usage error.
Errors are one line on stderr, never a traceback; `--json` gives machine output.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .core import Ledger, Submission
from .errors import DamagedRecord, LedgerError, UsageError, ValidationError
from .events import format_time, parse_time, validate_body
from .importer import Importer, json_value
from .keys import load_key_file, parse_public_key
from .store import default_db_url
from .verify import Checkpoint, FormatError, NoteError, b64encode, split_note

DEFAULT_ORIGIN = "response-ledger.local/log"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        transient=True,
    )


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, sort_keys=True) if args.json else text)


def _keys_dir(args: argparse.Namespace) -> Path:
    if args.keys:
        return Path(args.keys)
    env = os.environ.get("LEDGER_KEYS")
    return Path(env) if env else Path("var/keys")


def _open(args: argparse.Namespace) -> Ledger:
    creates = args.command in ("init", "demo")
    return Ledger.open(args.db or default_db_url(), _keys_dir(args), create=creates)


# --- commands -------------------------------------------------------------------
def cmd_init(args: argparse.Namespace, ledger: Ledger) -> int:
    public = ledger.init(args.origin)
    data = {
        "origin": args.origin,
        "public_key": b64encode(public),
        "key_file": str(ledger.ledger_key_path),
        "db": ledger.store.url.describe(),
    }
    _emit(args, data, f"ledger initialised ({data['db']})\nledger public key: {data['public_key']}")
    return 0


def cmd_agency_add(args: argparse.Namespace, ledger: Ledger) -> int:
    public = parse_public_key(args.public_key) if args.public_key else None
    key_id, path = ledger.register_agency(
        args.agency_id, args.kind, args.borough, args.name, public
    )
    token = ledger.tokens.issue(f"agency:{args.agency_id}", "agency", args.agency_id)
    data = {
        "token": token,
        "agency": args.agency_id,
        "kind": args.kind,
        "borough": args.borough,
        "key_id": key_id,
        "key_file": str(path) if path else None,
    }
    where = f", private key in {path} (mode 600)" if path else ", agency holds the private key"
    _emit(
        args,
        data,
        f"registered {args.agency_id} ({args.kind}) with key {key_id}{where}\n"
        f"API token (shown once): {token}",
    )
    return 0


def cmd_agency_rotate(args: argparse.Namespace, ledger: Ledger) -> int:
    old = [k for k, r in ledger.agency(args.agency_id).keys.items() if r["revoked_at"] is None]
    public = parse_public_key(args.public_key) if args.public_key else None
    key_id, _path = ledger.add_agency_key(args.agency_id, public)
    for k in old:
        ledger.revoke_agency_key(args.agency_id, k, "rotated")
    _emit(
        args,
        {"agency": args.agency_id, "key_id": key_id, "revoked": old},
        f"{args.agency_id}: new key {key_id}; revoked {', '.join(old) or 'none'}",
    )
    return 0


def cmd_agency_revoke(args: argparse.Namespace, ledger: Ledger) -> int:
    receipt = ledger.revoke_agency_key(args.agency_id, args.key_id, args.reason)
    _emit(args, receipt.as_dict(), f"revoked key {args.key_id} of {args.agency_id}")
    return 0


def cmd_append(args: argparse.Namespace, ledger: Ledger | None) -> int:
    payload = json_value(args.payload, "--payload")
    occurred = args.occurred_at or format_time(datetime.now(UTC))
    try:
        parse_time(occurred, "--occurred-at")
    except ValidationError as e:
        raise UsageError(str(e)) from None
    if args.server:
        if not (args.token and args.key):
            raise UsageError("--server needs --token and --key (the agency's private key file)")
        key_path = Path(args.key)
    else:
        assert ledger is not None
        ledger.agency(args.agency)  # an unknown agency is named before any key is looked for
        key_path = Path(args.key) if args.key else ledger.agency_key_path(args.agency)
    signer = load_key_file(key_path)
    event_id = args.event_id or f"{args.agency}-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}"
    draft: dict[str, Any] = {
        "v": 2,
        "case_id": args.case_id,
        "event_id": event_id,
        "type": args.type,
        "occurred_at": occurred,
        "agency": args.agency,
        "actor": {"role": args.actor_role, **({"ref": args.actor_ref} if args.actor_ref else {})},
        "payload": payload,
        "responds_to": args.responds_to or [],
        "corrects": args.corrects,
        "key_id": signer.key_id,
    }
    submission = Submission.signed(draft, signer)  # free text leaves the body for the vault
    validate_body(submission.body, datetime.now(UTC))
    if args.server:
        from .client import LedgerClient

        client = LedgerClient(args.server, args.token, signer)
        try:
            data = client.append(draft)
        finally:
            client.close()
        _emit(
            args,
            data,
            f"case/{data['case_id']} seq {data['seq']} {data['event_hash']}"
            + (" (already recorded: original receipt)" if data["duplicate"] else ""),
        )
        return 0
    assert ledger is not None
    receipt = ledger.append(submission)
    note = " (already recorded: original receipt)" if receipt.duplicate else ""
    _emit(args, receipt.as_dict(), f"{receipt.stream} seq {receipt.seq} {receipt.event_hash}{note}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from api.serve import serve
    from api.settings import BadSetting, settings_from_env

    from .policy import load_policy

    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is not a port number (0-65535)")
    if args.workers < 1:
        raise UsageError("--workers must be at least 1")
    db = args.db or default_db_url()
    # Refuse a missing ledger, a bad $LEDGER_POLICY or another bad setting here, in
    # one line, rather than in every worker's start-up.
    Ledger.open(db, _keys_dir(args), create=False).close()
    load_policy()
    os.environ["LEDGER_DB"] = db
    os.environ["LEDGER_KEYS"] = str(_keys_dir(args))
    try:
        settings_from_env()
    except BadSetting as e:
        raise UsageError(str(e)) from None
    try:
        serve(args.host, args.port, args.workers, access_log=not args.no_access_log)
    except OSError as e:
        raise UsageError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
    return 0


def cmd_import(args: argparse.Namespace, ledger: Ledger) -> int:
    importer = Importer(ledger, Path(args.file), args.sign)
    # Each signature is checked as the file is vetted, not again as it is written.
    with ledger.remembering_signatures():
        total = importer.check()  # the whole file, before anything is written
        with _progress(not args.json and sys.stderr.isatty()) as progress:
            task = progress.add_task("importing", total=total)
            appended, duplicates = importer.run(args.batch, lambda n: progress.advance(task, n))
    _emit(
        args,
        {"appended": appended, "duplicates": duplicates},
        f"imported {appended} events ({duplicates} already recorded)",
    )
    return 0


def cmd_cases(args: argparse.Namespace, ledger: Ledger) -> int:
    from .policy import load_policy
    from .report import case_summaries

    cases = case_summaries(ledger, load_policy(args.policy), args.borough, args.agency)
    if args.json:
        _emit(args, cases, "")
        return 0
    table = Table(
        "case",
        "boroughs",
        "agencies",
        "events",
        "open",
        "breached",
        "first occurred",
        "last occurred",
    )
    for c in cases:
        table.add_row(
            c["case_id"],
            ", ".join(c["boroughs"]),
            ", ".join(c["agencies"]),
            str(c["events"]),
            str(c["open_obligations"]),
            str(c["breached_obligations"]),
            c["first_occurred_at"],
            c["last_occurred_at"],
        )
    Console(width=200).print(table)
    return 0


def _instant(text: str | None, option: str) -> datetime | None:
    from .clock import parse_instant

    return None if text is None else parse_instant(text, option)


def cmd_replay(args: argparse.Namespace, ledger: Ledger) -> int:
    from .policy import load_policy
    from .report import replay_case, replay_dict, to_csv, to_html

    policy = load_policy(args.policy)
    # The operator holds the master key and sees narrative in full (on the access log);
    # a panel's redaction masks identifiers in it; a publication withholds it.
    view = {"panel": "panel", "publication": None}.get(args.redact or "", "full")
    r = replay_case(
        ledger,
        args.case_id,
        policy,
        _instant(args.as_of, "--as-of"),
        args.basis,
        view=view,
        reader=os.environ.get("USER", "cli"),
        reason=args.reason,
    )
    fmt = "json" if args.json else args.format
    if args.redact == "publication":
        from .publication import publication_rows

        rows = publication_rows(r)
        if fmt == "json":
            print(json.dumps({"case": "redacted for publication", "chronology": rows}, indent=2))
        else:
            table = Table(
                "month",
                "agency",
                "event",
                "people",
                "outcome",
                "action",
                title="chronology redacted for publication",
            )
            for row in rows:
                table.add_row(
                    row["month"],
                    row["agency_kind"],
                    row["event"],
                    row["people"],
                    row["outcome"],
                    row["action"],
                )
            Console(width=160).print(table)
        return 0
    if fmt == "json":
        print(json.dumps(replay_dict(r), indent=2, ensure_ascii=False))
    elif fmt == "csv":
        sys.stdout.write(to_csv(r))
    elif fmt == "html":
        sys.stdout.write(to_html(r))
    else:
        console = Console(width=160)
        table = Table(
            "date and time",
            "agency",
            "event",
            "action / why none",
            "outcome",
            title=f"case {args.case_id} as of {r.as_of:%d %b %Y %H:%M} ({r.basis})",
        )
        for row in r.chronology:
            table.add_row(
                row["date_time"], row["agency"], row["event"], row["action"], row["outcome"]
            )
        console.print(table)
        first = r.stall.get("first_stall")
        console.print(f"First stall: {first['sentence']}" if first else "No stall.")
        for o in replay_dict(r)["obligations"]:
            console.print(
                f"  {o['rule']} {o['status']:<9} {o['owing_agency']:<20} due {o['due']}"
                f"  {o['title']}"
            )
        for f in r.flags:
            console.print(f"  flag {f.kind} ({f.severity}): {f.detail}")
    return 0


def cmd_sweep(args: argparse.Namespace, ledger: Ledger) -> int:
    from .policy import load_policy
    from .sweep import sweep

    policy = load_policy(args.policy)
    now = _instant(args.now, "--now") or datetime.now(UTC)
    with _progress(not args.json and sys.stderr.isatty()) as progress:
        task = progress.add_task("sweeping cases", total=None)
        summary = sweep(ledger, policy, now, lambda n: progress.advance(task, n))
    data = {**summary.as_dict(), "now": now.isoformat(), "policy": policy.id}
    _emit(
        args,
        data,
        f"swept {summary.cases} cases: {summary.breached} breached obligations, "
        f"{summary.appended} DEADLINE_BREACHED appended, "
        f"{summary.already_recorded} already recorded, "
        f"{summary.retrospective} retrospective (historic, not appended)",
    )
    return 0


def cmd_verify(args: argparse.Namespace, ledger: Ledger) -> int:
    from .audit import audit

    if args.ledger_key:
        pinned = parse_public_key(args.ledger_key)
    elif (ledger.keys_dir / "ledger.pub").exists():
        pinned = parse_public_key((ledger.keys_dir / "ledger.pub").read_text())
    else:
        raise UsageError("no pinned ledger key: pass --ledger-key or keep ledger.pub in --keys")
    anchors = [_held_checkpoint(Path(path)) for path in args.checkpoint or []]
    total = ledger.store.catalog.count_events()
    with _progress(not args.json and sys.stderr.isatty()) as progress:
        task = progress.add_task("verifying", total=total)
        report = audit(ledger.store, pinned, lambda n: progress.advance(task, n), anchors=anchors)
    data = report.as_dict()
    vault_problems: list[str] = []
    if args.vault and report.ok:
        opened, vault_problems = ledger.vault().check(os.environ.get("USER", "cli"))
        data["vault"] = {"checked": opened, "problems": vault_problems}
    if report.ok and not vault_problems:
        vault_line = (
            f"; vault: {data['vault']['checked']} sealed items opened and checked"
            if args.vault
            else ""
        )
        _emit(
            args,
            data,
            f"OK: {report.events} events in {report.streams} streams "
            f"({report.cases} cases, {report.agencies} agencies) verified; Merkle log of "
            f"{report.leaves} events and {report.checkpoints} checkpoint(s) recomputed"
            + (
                f", agreeing with {report.anchors} checkpoint(s) held outside"
                if report.anchors
                else ""
            )
            + vault_line,
        )
        return 0
    if vault_problems:
        if args.json:
            _emit(args, data, "")
        else:
            print(f"FAIL: {vault_problems[0]}", file=sys.stderr)
            for problem in vault_problems[1:20]:
                print(f"  also: {problem}", file=sys.stderr)
            print(f"{len(vault_problems)} vault problem(s)", file=sys.stderr)
        return 1
    if args.json:
        _emit(args, data, "")
    else:
        first = report.problems[0]
        print(f"FAIL: {first.describe()}", file=sys.stderr)
        for p in report.problems[1:20]:
            print(f"  also: {p.describe()}", file=sys.stderr)
        print(f"{report.problem_count} problem(s) in {report.events} events", file=sys.stderr)
    return 1


HELD_CHECKPOINT_MAX = 256 * 1024 * 1024  # more than any bundle of one case


def _held_checkpoint(path: Path) -> tuple[str, str]:
    """(name, signed note) of a checkpoint kept outside the ledger: a note as `ledger log
    checkpoint` or GET /v1/log/checkpoint gives it, or an evidence bundle holding one.
    Whether the log signed it is for verify to say."""
    try:
        with path.open("rb") as f:
            raw = f.read(HELD_CHECKPOINT_MAX + 1)
    except OSError as e:
        raise UsageError(f"cannot read checkpoint file {path}: {e.strerror or e}") from None
    if len(raw) > HELD_CHECKPOINT_MAX:
        raise UsageError(f"{path} is larger than any checkpoint or bundle")
    try:
        # Text as an editor may have saved it: a byte-order mark, CRLF line ends.
        text = raw.decode("utf-8-sig").replace("\r\n", "\n")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text, so holds no checkpoint") from None
    if text.lstrip().startswith("{"):
        bundle = json_value(text, str(path))
        held = bundle.get("checkpoint") if isinstance(bundle, dict) else None
        if not isinstance(held, str):
            raise UsageError(f"{path} is JSON but no bundle with a 'checkpoint' member")
        text = held
    try:
        Checkpoint.parse(split_note(text)[0])
    except NoteError as e:
        raise UsageError(f"{path} is not a signed checkpoint: {e}") from None
    return str(path), text


def cmd_log_checkpoint(args: argparse.Namespace, ledger: Ledger) -> int:
    note = ledger.checkpoint()
    if args.json:
        _emit(args, {"checkpoint": note, "tree_size": int(note.split("\n")[1])}, "")
    else:
        sys.stdout.write(note)
    return 0


def cmd_log_key(args: argparse.Namespace, ledger: Ledger) -> int:
    key = ledger.log_verifier().encode()
    _emit(args, {"verifier_key": key}, key)
    return 0


def cmd_log_inclusion(args: argparse.Namespace, ledger: Ledger) -> int:
    if (args.index is None) == (args.event_hash is None):
        raise UsageError("give exactly one of --index and --event-hash")
    index = args.index if args.index is not None else ledger.log.leaf_index_of(args.event_hash)
    proof = ledger.log.inclusion(index, args.size)
    print(json.dumps(proof.as_dict(), indent=2))
    return 0


def cmd_log_consistency(args: argparse.Namespace, ledger: Ledger) -> int:
    print(json.dumps(ledger.log.consistency(args.first, args.second).as_dict(), indent=2))
    return 0


def cmd_log_witness(args: argparse.Namespace, ledger: Ledger | None) -> int:
    from .checkpoint import NoteVerifier
    from .witness import InconsistentLog, LogSource, RemoteLog, Witness

    witness = Witness(Path(args.state), args.name)
    try:
        offered = NoteVerifier.parse(args.log_key) if args.log_key else None
    except ValueError as e:
        raise UsageError(f"--log-key: {e}") from None
    remote: RemoteLog | None = None
    log: LogSource
    note: str
    if args.server:
        if not args.token:
            raise UsageError("--server needs --token (an auditor token)")
        remote = RemoteLog(args.server, args.token)
        log = remote
    else:
        assert ledger is not None
        log = ledger.log
        if offered is None and not (Path(args.state) / "log.vkey").exists():
            offered = ledger.log_verifier()  # first use: pin the key this ledger names
    try:
        log_key = witness.pinned_log_key(offered)
        if remote is not None:
            note = remote.latest_checkpoint()
        else:
            assert ledger is not None
            note = ledger.log.latest_checkpoint(with_cosignatures=False)
        result = witness.witness(log, note, log_key)
    except InconsistentLog as e:
        print(f"ledger: REFUSED: {e}", file=sys.stderr)
        print("--- checkpoint this witness holds ---", file=sys.stderr)
        sys.stderr.write(e.old_note)
        print("--- checkpoint the log now serves ---", file=sys.stderr)
        sys.stderr.write(e.new_note)
        return 1
    finally:
        if remote is not None:
            remote.close()
    data = {
        "witness": witness.name,
        "verifier_key": witness.verifier.encode(),
        "tree_size": result.size,
        "previous_size": result.previous_size,
        "cosignature": result.cosignature,
    }
    _emit(
        args,
        data,
        f"cosigned size {result.size} as {witness.name} (previously {result.previous_size})",
    )
    return 0


def cmd_export(args: argparse.Namespace, ledger: Ledger) -> int:
    from .bundle import export_bundle

    bundle = export_bundle(ledger, args.case_id)
    out = Path(args.output)
    try:
        out.write_text(json.dumps(bundle, indent=2, ensure_ascii=False) + "\n")
    except OSError as e:
        raise UsageError(f"cannot write {out}: {e.strerror}") from None
    _emit(
        args,
        {
            "file": str(out),
            "entries": len(bundle["entries"]),
            "tree_size": bundle["tree_size"],
            "log_key": bundle["log"]["verifier_key"],
        },
        f"wrote {out}: {len(bundle['entries'])} entries proved in a checkpoint of "
        f"{bundle['tree_size']} events; verify with: ledger verify-bundle {out} "
        f"--log-key {bundle['log']['verifier_key']}",
    )
    return 0


def cmd_verify_bundle(args: argparse.Namespace) -> int:
    from .verify import main as verify_main

    argv = [args.bundle, "--log-key", args.log_key]
    for key in args.witness_key or []:
        argv += ["--witness-key", key]
    return verify_main([*argv, "--json"] if args.json else argv)


def cmd_token_add(args: argparse.Namespace, ledger: Ledger) -> int:
    token = ledger.issue_token(args.name, args.role, args.agency)
    _emit(
        args,
        {"name": args.name, "role": args.role, "token": token},
        f"token {args.name} ({args.role}), shown once: {token}",
    )
    return 0


def cmd_token_revoke(args: argparse.Namespace, ledger: Ledger) -> int:
    ledger.tokens.revoke(args.name)
    _emit(args, {"name": args.name, "revoked": True}, f"revoked token {args.name}")
    return 0


def cmd_token_list(args: argparse.Namespace, ledger: Ledger) -> int:
    tokens = ledger.tokens.list()
    _emit(
        args,
        tokens,
        "\n".join(
            f"{t['name']}\t{t['role']}\t{t['agency'] or ''}\t"
            f"{'revoked ' + str(t['revoked_at']) if t['revoked_at'] else 'active'}"
            for t in tokens
        ),
    )
    return 0


def cmd_subject_add(args: argparse.Namespace, ledger: Ledger | None) -> int:
    if args.server:
        from .client import add_subject

        if not args.token:
            raise UsageError("--server needs --token (the agency's API token)")
        fields = {"name": args.name, "dob": args.dob, "address": args.address}
        fields |= {"borough": args.borough, "kind": args.kind}
        ref = add_subject(args.server, args.token, fields)
    else:
        assert ledger is not None
        ref = ledger.vault().add(args.name, args.dob, args.address, args.kind, args.borough)
    _emit(args, {"ref": ref}, ref)
    return 0


def cmd_subject_show(args: argparse.Namespace, ledger: Ledger) -> int:

    data = ledger.vault().view(
        args.ref, args.view, args.reader or os.environ.get("USER", "cli"), args.reason
    )
    _emit(args, data, "\n".join(f"{k}: {v if v is not None else ''}" for k, v in data.items()))
    return 0


def cmd_narrative_erase(args: argparse.Namespace, ledger: Ledger) -> int:
    ledger.case_envelopes(args.case_id)  # an unknown case is named, not erased
    ledger.vault().erase_narrative(args.case_id, args.reason)
    _emit(
        args,
        {"case_id": args.case_id, "narrative_erased": True},
        f"narrative of case {args.case_id} erased; every proof still verifies",
    )
    return 0


def cmd_subject_erase(args: argparse.Namespace, ledger: Ledger) -> int:

    plan = ledger.vault().erase(args.ref, args.reason, dry_run=args.dry_run)
    gone, kept = plan["destroyed"], plan["kept"]
    if args.dry_run:
        head = f"dry run: erasing {args.ref} would destroy {len(gone)} narrative text(s)"
    else:
        head = (
            f"erased {args.ref}: its key and data are destroyed, with {len(gone)} narrative "
            "text(s) naming them; the audit trail still verifies"
        )
    lines = [head]
    lines += [f"  destroy {t['case_id']} {t['event_id']} {t['field']}" for t in gone]
    if kept:
        lines.append(
            f"{len(kept)} text(s) mention only part of the name and are kept "
            "(review them; 'ledger narrative erase CASE' erases a case's narrative):"
        )
        lines += [f"  keep {t['case_id']} {t['event_id']} {t['field']}" for t in kept]
    _emit(args, {**plan, "erased": not args.dry_run}, "\n".join(lines))
    return 0


def cmd_hold(args: argparse.Namespace, ledger: Ledger) -> int:

    ledger.vault().hold(args.target, args.reason or "", on=args.hold_command == "set")
    _emit(
        args,
        {"target": args.target, "hold": args.hold_command == "set"},
        f"legal hold {'set on' if args.hold_command == 'set' else 'cleared from'} {args.target}",
    )
    return 0


def cmd_stats(args: argparse.Namespace, ledger: Ledger) -> int:
    from .policy import load_policy
    from .publication import publish_stats

    if not args.publish:
        raise UsageError("only --publish statistics are offered (counts safe to publish)")
    print(json.dumps(publish_stats(ledger, load_policy(args.policy)), indent=2))
    return 0


def cmd_links(args: argparse.Namespace, ledger: Ledger) -> int:
    from .publication import decide_link, suggest_links

    if args.links_command in ("confirm", "reject"):
        receipts = decide_link(
            ledger,
            args.case_a,
            args.case_b,
            args.ref,
            args.links_command == "confirm",
            args.reason,
            args.by or os.environ.get("USER", "cli"),
        )
        _emit(
            args,
            [r.as_dict() for r in receipts],
            f"link {args.case_a} ~ {args.case_b} via {args.ref}: {args.links_command}ed",
        )
        return 0
    links = suggest_links(ledger)
    _emit(
        args,
        [link.as_dict() for link in links],
        "\n".join(
            f"{link.ref} ({link.kind}): {' ~ '.join(link.cases)} in {', '.join(link.boroughs)}; "
            f"events {', '.join(link.events)}"
            for link in links
        )
        or "no link suggestions",
    )
    return 0


def cmd_demo(args: argparse.Namespace, ledger: Ledger) -> int:
    from .demo import load_demo

    summary = load_demo(ledger, origin=DEFAULT_ORIGIN)
    _emit(
        args,
        summary,
        f"demo loaded: {summary['cases']} cases, {summary['events']} events, "
        f"{summary['agencies']} agencies",
    )
    return 0


# --- parser -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    # SUPPRESS: options may come before or after the verb without one erasing the other.
    common.add_argument(
        "--db",
        default=argparse.SUPPRESS,
        help="database URL (default $LEDGER_DB or sqlite:///var/ledger.sqlite)",
    )
    common.add_argument(
        "--keys", default=argparse.SUPPRESS, help="key directory (default $LEDGER_KEYS or var/keys)"
    )
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output"
    )
    parser = _Parser(prog="ledger", description=__doc__, parents=[common])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("init", parents=[common], help="create the store and the ledger key")
    p.add_argument("--origin", default=DEFAULT_ORIGIN, help="the log's origin name")
    p.set_defaults(func=cmd_init)

    agency = sub.add_parser("agency", parents=[common], help="register agencies and their keys")
    asub = agency.add_subparsers(dest="agency_command", required=True, parser_class=_Parser)
    p = asub.add_parser("add", parents=[common], help="register an agency with a signing key")
    p.add_argument("agency_id")
    p.add_argument("--kind", required=True)
    p.add_argument("--borough")
    p.add_argument("--name")
    p.add_argument("--public-key", help="register an agency-held key (base64 or PEM file)")
    p.set_defaults(func=cmd_agency_add)
    p = asub.add_parser("rotate-key", parents=[common], help="add a new key and revoke the old")
    p.add_argument("agency_id")
    p.add_argument("--public-key")
    p.set_defaults(func=cmd_agency_rotate)
    p = asub.add_parser("revoke-key", parents=[common], help="revoke one key")
    p.add_argument("agency_id")
    p.add_argument("key_id")
    p.add_argument("--reason", required=True)
    p.set_defaults(func=cmd_agency_revoke)

    p = sub.add_parser("append", parents=[common], help="sign and append one event")
    p.add_argument("case_id")
    p.add_argument("--type", required=True)
    p.add_argument("--payload", default="{}")
    p.add_argument("--agency", required=True)
    p.add_argument("--event-id")
    p.add_argument("--occurred-at", help="UTC time, e.g. 2024-03-03T14:05:00Z (default now)")
    p.add_argument("--actor-role", default="practitioner")
    p.add_argument("--actor-ref")
    p.add_argument("--responds-to", action="append")
    p.add_argument("--corrects")
    p.add_argument("--key", help="agency private key file (default KEYS/agencies/AGENCY.key)")
    p.add_argument("--server", help="append over HTTP to this ledger (with --token and --key)")
    p.add_argument("--token", help="the agency's API token (for --server)")
    p.set_defaults(func=cmd_append)

    p = sub.add_parser("import", parents=[common], help="bulk-append events from JSONL")
    p.add_argument("file")
    p.add_argument(
        "--sign", action="store_true", help="sign unsigned bodies with local agency keys"
    )
    p.add_argument("--batch", type=int, default=500, help="events per transaction")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("cases", parents=[common], help="list cases with obligations")
    p.add_argument("--borough")
    p.add_argument("--agency")
    p.add_argument("--policy", help="response-standards policy file (default $LEDGER_POLICY)")
    p.set_defaults(func=cmd_cases)

    p = sub.add_parser("replay", parents=[common], help="chronology, obligations and stalls")
    p.add_argument("case_id")
    p.add_argument("--as-of", help="replay as of this instant (default now)")
    p.add_argument(
        "--basis",
        choices=["recorded", "occurred"],
        default="recorded",
        help="what the ledger knew by then, or what had happened by then",
    )
    p.add_argument("--format", choices=["table", "json", "csv", "html"], default="table")
    p.add_argument("--policy", help="response-standards policy file (default $LEDGER_POLICY)")
    p.add_argument(
        "--redact",
        choices=["panel", "publication"],
        help="panel: identifiers in narrative masked; "
        "publication: months, 'Child A'/'Adult 1', narrative withheld",
    )
    p.add_argument("--reason", default="ledger replay", help="why (for the access log)")
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser(
        "narrative", parents=[common], help="case narrative in the vault (end of retention)"
    )
    nsub = p.add_subparsers(dest="narrative_command", required=True)
    q = nsub.add_parser("erase", parents=[common], help="crypto-shred a case's narrative")
    q.add_argument("case_id")
    q.add_argument("--reason", required=True)
    q.set_defaults(func=cmd_narrative_erase)

    p = sub.add_parser("sweep", parents=[common], help="append DEADLINE_BREACHED for overdue")
    p.add_argument("--now", help="sweep as of this instant (default now)")
    p.add_argument("--policy", help="response-standards policy file (default $LEDGER_POLICY)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("verify", parents=[common], help="verify every stored event")
    p.add_argument("--ledger-key", help="pinned ledger public key (base64 or PEM file)")
    p.add_argument(
        "--vault",
        action="store_true",
        help="also open every sealed narrative and identity (needs the master key) and "
        "check each narrative against its signed commitment",
    )
    p.add_argument(
        "--checkpoint",
        action="append",
        metavar="FILE",
        help="a signed checkpoint kept outside the database (a note from `ledger log "
        "checkpoint` or the API, or an evidence bundle): the log must still agree with "
        "it, which whoever holds the database and the log key cannot fake (repeatable)",
    )
    p.set_defaults(func=cmd_verify)

    log = sub.add_parser("log", parents=[common], help="the verifiable Merkle log")
    lsub = log.add_subparsers(dest="log_command", required=True, parser_class=_Parser)
    p = lsub.add_parser("checkpoint", parents=[common], help="integrate and sign a checkpoint")
    p.set_defaults(func=cmd_log_checkpoint)
    p = lsub.add_parser("key", parents=[common], help="print the log's note verifier key")
    p.set_defaults(func=cmd_log_key)
    p = lsub.add_parser("inclusion", parents=[common], help="inclusion proof as JSON")
    p.add_argument("--index", type=int)
    p.add_argument("--event-hash")
    p.add_argument("--size", type=int, help="tree size (default: the log's current size)")
    p.set_defaults(func=cmd_log_inclusion)
    p = lsub.add_parser("consistency", parents=[common], help="consistency proof as JSON")
    p.add_argument("--first", type=int, required=True)
    p.add_argument("--second", type=int, required=True)
    p.set_defaults(func=cmd_log_consistency)

    p = lsub.add_parser("witness", parents=[common], help="check consistency and cosign")
    p.add_argument("--state", required=True, help="the witness's state directory")
    p.add_argument("--name", help="witness name (first run; default witness.local/w1)")
    p.add_argument("--log-key", help="log verifier key to pin (default: the ledger's own)")
    p.add_argument("--server", help="witness a ledger over HTTP instead of its database")
    p.add_argument("--token", help="auditor token (for --server)")
    p.set_defaults(func=cmd_log_witness)

    p = sub.add_parser("export", parents=[common], help="write a case's evidence bundle")
    p.add_argument("case_id")
    p.add_argument("-o", "--output", required=True)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("verify-bundle", parents=[common], help="verify a bundle offline")
    p.add_argument("bundle")
    p.add_argument("--log-key", required=True, help="the log's note verifier key")
    p.add_argument("--witness-key", action="append", help="require this witness's cosignature")
    p.set_defaults(func=cmd_verify_bundle, offline=True)

    token = sub.add_parser("token", parents=[common], help="API tokens for readers and admins")
    tsub = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    p = tsub.add_parser("add", parents=[common], help="issue a token (shown once)")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=["panel", "auditor", "admin", "agency"])
    p.add_argument("--agency", help="for --role agency: the agency it writes as")
    p.set_defaults(func=cmd_token_add)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token by name")
    p.add_argument("name")
    p.set_defaults(func=cmd_token_revoke)
    p = tsub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    p.set_defaults(func=cmd_token_list)

    subject = sub.add_parser("subject", parents=[common], help="identifying data in the vault")
    ssub = subject.add_subparsers(dest="subject_command", required=True, parser_class=_Parser)
    p = ssub.add_parser("add", parents=[common], help="seal a person's data; print their ref")
    p.add_argument("--name", required=True)
    p.add_argument("--dob")
    p.add_argument("--address")
    p.add_argument("--borough", help="local authority area, the most a panel is shown")
    p.add_argument("--kind", choices=["child", "person", "staff"], default="child")
    p.add_argument("--server", help="hand the identity to this ledger over HTTP (with --token)")
    p.add_argument("--token", help="the agency's API token (for --server)")
    p.set_defaults(func=cmd_subject_add)
    p = ssub.add_parser("show", parents=[common], help="decrypt (recorded in the access log)")
    p.add_argument("ref")
    p.add_argument("--reason", required=True)
    p.add_argument("--reader")
    p.add_argument(
        "--view",
        choices=["full", "panel", "auditor"],
        default="full",
        help="full identities, a panel's (age band, borough) or an auditor's (metadata)",
    )
    p.set_defaults(func=cmd_subject_show)
    p = ssub.add_parser("erase", parents=[common], help="crypto-shred a subject's data")
    p.add_argument("ref")
    p.add_argument("--reason", required=True)
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="list the narrative texts erasure would destroy, and those it would keep",
    )
    p.set_defaults(func=cmd_subject_erase)
    hold = sub.add_parser("hold", parents=[common], help="legal holds that block erasure")
    hsub = hold.add_subparsers(dest="hold_command", required=True, parser_class=_Parser)
    for verb in ("set", "clear"):
        p = hsub.add_parser(verb, parents=[common], help=f"{verb} a hold on a case or subject")
        p.add_argument("target", help="a case id or a subject reference")
        p.add_argument("--reason", required=verb == "set")
        p.set_defaults(func=cmd_hold)

    p = sub.add_parser("stats", parents=[common], help="statistics fit to publish")
    p.add_argument("--publish", action="store_true", help="suppress counts of 1-5 as c")
    p.add_argument("--policy")
    p.set_defaults(func=cmd_stats)

    links = sub.add_parser("links", parents=[common], help="cross-borough link suggestions")
    lksub = links.add_subparsers(dest="links_command", parser_class=_Parser)
    links.set_defaults(func=cmd_links, links_command=None)
    p = lksub.add_parser("list", parents=[common], help="suggested links (the default)")
    p.set_defaults(func=cmd_links)
    for verb in ("confirm", "reject"):
        p = lksub.add_parser(verb, parents=[common], help=f"{verb} a suggested link")
        p.add_argument("case_a")
        p.add_argument("case_b")
        p.add_argument("--ref", required=True)
        p.add_argument("--reason", required=True)
        p.add_argument("--by")
        p.set_defaults(func=cmd_links)

    p = sub.add_parser("serve", parents=[common], help="HTTP API (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log each request (reads are still on the ledger's own access log)",
    )
    p.set_defaults(func=cmd_serve, offline=True)

    p = sub.add_parser("demo", parents=[common], help="load synthetic demo cases")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        for name, default in (("db", None), ("keys", None), ("json", False)):
            if not hasattr(args, name):
                setattr(args, name, default)
        if args.command == "import" and args.batch < 1:
            raise UsageError("--batch must be at least 1")
        if getattr(args, "offline", False):
            return int(args.func(args))  # opens no ledger of its own
        if getattr(args, "server", None) and args.command in ("append", "log", "subject"):
            return int(args.func(args, None))  # talks to a server, opens no database
        ledger = _open(args)
        try:
            return int(args.func(args, ledger))
        finally:
            ledger.close()
    except UsageError as e:
        print(f"ledger: error: {e}", file=sys.stderr)
        return 2
    except LedgerError as e:
        print(f"ledger: {e}", file=sys.stderr)
        return 1
    except FormatError as e:  # read somewhere that does not say where: still one line
        print(f"ledger: {DamagedRecord('in this ledger', e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ledger: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except UnicodeDecodeError as e:
        print(
            f"ledger: error: input is not UTF-8 text ({e.reason} at byte {e.start})",
            file=sys.stderr,
        )
        return 2
    except OSError as e:
        # The machine refused (a directory that cannot be made, a file that cannot be
        # read): the operator's to fix, so one line, not a traceback.
        where = f": {e.filename}" if e.filename else ""
        print(f"ledger: {e.strerror or e}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
