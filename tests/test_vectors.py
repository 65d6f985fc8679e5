"""Known-answer vectors: ours (tests/vectors/) and other projects' (../shared/vectors/)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.canonical import canonical, envelope_bytes, sha256_hex
from ledger.errors import ValidationError
from ledger.keys import Signer
from ledger.verify import FormatError, b64decode, b64encode, parse_envelope, signature_ok

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "vectors"
EVENTS: dict[str, Any] = json.loads((HERE / "vectors" / "events.json").read_text())
NARRATIVE: dict[str, Any] = json.loads((HERE / "vectors" / "narrative.json").read_text())


def test_shared_vectors_are_present() -> None:
    # The suite must not pass by finding no third-party vectors.
    assert len(list((SHARED / "rfc8785" / "input").glob("*.json"))) >= 6


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (SHARED / "rfc8785" / "input").glob("*.json"))
)
def test_rfc8785_reference_vectors(name: str) -> None:
    source = (SHARED / "rfc8785" / "input" / name).read_text(encoding="utf-8")
    expected = (SHARED / "rfc8785" / "output" / name).read_bytes()
    assert canonical(json.loads(source)) == expected.rstrip(b"\n")


def test_rfc8032_test1_signature() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EVENTS["signing_key_seed_hex"]))
    assert key.sign(b"").hex() == EVENTS["rfc8032_test1"]["signature_hex"]
    assert key.sign(b"").hex().startswith("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974")


def test_event_vector_bytes_hash_and_signature() -> None:
    signer = Signer(
        Ed25519PrivateKey.from_private_bytes(bytes.fromhex(EVENTS["signing_key_seed_hex"]))
    )
    assert signer.public_b64 == EVENTS["public_key_b64"]
    assert signer.key_id == EVENTS["key_id"]
    body_bytes = canonical(EVENTS["body"])
    assert body_bytes.decode() == EVENTS["body_canonical"]
    sig = signer.sign_body(body_bytes)
    assert (b"response-ledger/v1/event-body\n" + body_bytes).hex() == EVENTS["signing_message_hex"]
    assert b64decode(EVENTS["signature_b64"]) == sig
    env = envelope_bytes(body_bytes, sig, EVENTS["seq"], EVENTS["recorded_at"], EVENTS["prev_hash"])
    assert env.decode() == EVENTS["envelope"]
    assert sha256_hex(env) == EVENTS["event_hash"]
    parsed = parse_envelope(env)
    assert parsed.event_hash == EVENTS["event_hash"]
    assert parsed.body_bytes == body_bytes
    public = Ed25519PublicKey.from_public_bytes(b64decode(EVENTS["public_key_b64"]))
    assert signature_ok(public, parsed.sig, parsed.body_bytes)


@pytest.mark.parametrize(
    ("good", "case"),
    [(EVENTS["envelope"], c) for c in EVENTS["negative"]]
    + [(NARRATIVE["envelope"], c) for c in NARRATIVE["negative"]],
    ids=lambda v: v["name"] if isinstance(v, dict) else "",
)
def test_negative_event_vectors_fail(good: str, case: dict[str, Any]) -> None:
    public = Ed25519PublicKey.from_public_bytes(b64decode(EVENTS["public_key_b64"]))
    raw = case["envelope"].encode()
    assert raw != good.encode()
    if case["fails"] == "format":
        with pytest.raises(FormatError):
            parse_envelope(raw)
    else:
        parsed = parse_envelope(raw)
        assert not signature_ok(public, parsed.sig, parsed.body_bytes)


@settings(max_examples=300)
@given(text=st.text(), seq=st.integers(1, 2**53 - 1), prev=st.one_of(st.none(), st.just("ab" * 32)))
def test_envelope_writer_matches_rfc8785(text: str, seq: int, prev: str | None) -> None:
    """The fast envelope writer gives the same bytes as the RFC 8785 library."""
    import rfc8785

    try:
        body_bytes = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates cannot be in a canonical body
        return
    sig = b"\x01" * 64
    expected = rfc8785.dumps(
        {
            "v": 1,
            "body": text,
            "sig": b64encode(sig),
            "seq": seq,
            "recorded_at": "2026-01-01T00:00:00.000000Z",
            "prev_hash": prev,
        }
    )
    assert envelope_bytes(body_bytes, sig, seq, "2026-01-01T00:00:00.000000Z", prev) == expected


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**60), 2**60)
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=500)
@given(value=JSON_VALUES)
def test_canonical_matches_rfc8785_library(value: Any) -> None:
    """The fast path and the `rfc8785` library agree byte for byte, or both refuse."""
    import rfc8785

    try:
        expected: bytes | None = bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, ValueError, UnicodeEncodeError):
        expected = None
    if expected is None:
        with pytest.raises(ValidationError):
            canonical(value)
    else:
        assert canonical(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        # Keys below U+10000 in every UTF-8 length, where orjson's order must be RFC
        # 8785's: code point order and UTF-16 order coincide there.
        {"\uffff": 1, "\ue000": 2, "\u0100": 3, "\u00e9": 4, "z": 5, "A": 6, "": 7},
        # Control characters, quote, backslash, DEL and the line separators.
        {"k": "".join(map(chr, range(0x20))) + '"\\/\x7f\u2028\u2029'},
        # Deeper than orjson writes (255 levels): the standard encoder takes it.
        json.loads('{"a":' * 300 + "1" + "}" * 300),
        json.loads("[" * 300 + "]" * 300),
    ],
    ids=["key-order", "escapes", "deep-object", "deep-array"],
)
def test_canonical_matches_rfc8785_where_orjson_could_part_ways(value: Any) -> None:
    import rfc8785

    assert canonical(value) == bytes(rfc8785.dumps(value))


def test_a_value_that_contains_itself_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValidationError, match="cannot be canonicalised"):
        canonical({"x": loop})


def _outcome(decode: Any, text: str) -> bytes | str:
    try:
        return bytes(decode(text))
    except (ValueError, TypeError) as e:
        return type(e).__name__


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=-_ \n\xe9")
)
def test_b64decode_accepts_and_refuses_as_the_standard_decoder(text: str) -> None:
    import base64

    def standard(t: str) -> bytes:
        return base64.b64decode(t.encode("ascii"), validate=True)

    assert _outcome(b64decode, text) == _outcome(standard, text)


OURS = HERE / "vectors"


@pytest.mark.parametrize(
    "case",
    json.loads((OURS / "rfc9162" / "inclusion.json").read_text()),
    ids=lambda c: f"{c['treeSize']}-{c['leafIdx']}-{c['desc']}",
)
def test_our_inclusion_vectors(case: dict[str, Any]) -> None:
    from ledger.merkle import InvalidProof, verify_inclusion

    args = (
        case["leafIdx"],
        case["treeSize"],
        b64decode(case["leafHash"]),
        [b64decode(h) for h in case["proof"]],
        b64decode(case["root"]),
    )
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(
    "case",
    json.loads((OURS / "rfc9162" / "consistency.json").read_text()),
    ids=lambda c: f"{c['size1']}-{c['size2']}-{c['desc']}",
)
def test_our_consistency_vectors(case: dict[str, Any]) -> None:
    from ledger.merkle import InvalidProof, verify_consistency

    args = (
        case["size1"],
        case["size2"],
        [b64decode(h) for h in case["proof"]],
        b64decode(case["root1"]),
        b64decode(case["root2"]),
    )
    if case["wantErr"]:
        with pytest.raises(InvalidProof):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


@pytest.mark.parametrize(
    "case", json.loads((OURS / "signed-note.json").read_text()), ids=lambda c: c["desc"]
)
def test_our_signed_note_vectors(case: dict[str, Any]) -> None:
    from ledger.checkpoint import NoteError, NoteVerifier, verify_checkpoint, verify_cosignature

    check = verify_cosignature if case.get("cosignature") else verify_checkpoint
    key = NoteVerifier.parse(case["vkey"])
    if case["wantErr"]:
        with pytest.raises(NoteError):
            check(case["note"], key)
    else:
        check(case["note"], key)


BUNDLE_KEY = (OURS / "bundles" / "log-key.txt").read_text().strip()


def test_valid_bundle_vector_verifies() -> None:
    from ledger.verify import verify_bundle

    report = verify_bundle(json.loads((OURS / "bundles" / "valid.json").read_text()), BUNDLE_KEY)
    assert (report.case_id, report.events) == ("V-1", 3)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("tampered-byte", "entry 5 (case/V-1 seq 3): inclusion proof gives root"),
        ("tampered-dropped-event", "case/V-1 seq 3 (event v-2): seq 2 missing"),
        ("tampered-foreign-checkpoint", "checkpoint: note is not signed by"),
    ],
)
def test_tampered_bundle_vectors_fail_naming_what(name: str, needle: str) -> None:
    from ledger.verify import verify_bundle

    bundle = json.loads((OURS / "bundles" / f"{name}.json").read_text())
    with pytest.raises(FormatError, match=re.escape(needle)):
        verify_bundle(bundle, BUNDLE_KEY)


def test_verify_bundle_answers_in_json_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    valid = str(OURS / "bundles" / "valid.json")
    assert main(["verify-bundle", valid, "--log-key", BUNDLE_KEY, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "ok": True,
        "case_id": "V-1",
        "events": 3,
        "registry_events": 3,
        "tree_size": 6,
        "witnesses": [],
    }
    bad = str(OURS / "bundles" / "tampered-byte.json")
    assert main(["verify-bundle", bad, "--log-key", BUNDLE_KEY, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False and "inclusion proof gives root" in out["error"]


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "cannot read {path}: No such file"),
        (b"\xff\xfe{}", "{path} is not UTF-8 text"),
        (b"not json", "{path} is not JSON (Expecting value at line 1 column 1)"),
        (b"[" * 100_000, "{path} nests too deeply"),
        (b'{"n": ' + b"1" * 5000 + b"}", "{path} is not usable JSON: Exceeds the limit"),
        (b"[]", "not a response-ledger"),
        (b'{"format": "response-ledger-bundle/v1"}', "bundle fields are not exactly"),
    ],
)
def test_malformed_bundle_files_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, needle: str
) -> None:
    """Named with what is wrong with it, not a bare decoder message or a traceback."""
    from ledger.cli import main

    path = tmp_path / "b.json"
    if content is not None:
        path.write_bytes(content)
    assert main(["verify-bundle", str(path), "--log-key", BUNDLE_KEY]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("FAIL:")
    assert needle.format(path=path) in err, err


def _members_replaced(bundle: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The valid bundle with one member, at the top, in `log` or in the first entry,
    replaced by a value of another kind."""
    odds: list[Any] = [None, 5, "x", [], {}, [1], True]
    for odd in odds:
        for key in bundle:
            yield {**bundle, key: odd}
        for key in bundle["log"]:
            yield {**bundle, "log": {**bundle["log"], key: odd}}
        for key in bundle["entries"][0]:
            entry = {**bundle["entries"][0], key: odd}
            yield {**bundle, "entries": [entry, *bundle["entries"][1:]]}
        yield {**bundle, "entries": [odd, *bundle["entries"][1:]]}


def test_a_bundle_with_members_of_the_wrong_kind_fails_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from ledger.cli import main

    bundle = json.loads((OURS / "bundles" / "valid.json").read_text())
    path = tmp_path / "b.json"
    tried = 0
    for changed in _members_replaced(bundle):
        path.write_text(json.dumps(changed))
        assert main(["verify-bundle", str(path), "--log-key", BUNDLE_KEY]) == 1, changed
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("FAIL:"), err
        tried += 1
    assert tried > 50


def test_narrative_vector_commitment_body_and_envelope() -> None:
    import hashlib

    from ledger.verify import narrative_commitment

    salt = b64decode(NARRATIVE["salt_b64"])
    field, text = NARRATIVE["field"], NARRATIVE["text"]
    data = bytes.fromhex(NARRATIVE["commitment_input_hex"])
    assert data == b"response-ledger/v2/narrative\n" + salt + field.encode() + b"\0" + text.encode()
    assert hashlib.sha256(data).hexdigest() == NARRATIVE["commitment"]
    assert narrative_commitment(field, text, salt) == NARRATIVE["commitment"]
    for wrong in NARRATIVE["wrong_texts"]:
        assert narrative_commitment(field, wrong, salt) != NARRATIVE["commitment"]
    assert narrative_commitment("summary", text, salt) != NARRATIVE["commitment"]
    body_bytes = canonical(NARRATIVE["body"])
    assert body_bytes.decode() == NARRATIVE["body_canonical"]
    assert NARRATIVE["body"]["narrative"] == {field: NARRATIVE["commitment"]}
    parsed = parse_envelope(NARRATIVE["envelope"].encode())
    assert parsed.event_hash == NARRATIVE["event_hash"]
    public = Ed25519PublicKey.from_public_bytes(b64decode(EVENTS["public_key_b64"]))
    assert signature_ok(public, parsed.sig, parsed.body_bytes)
    assert text.encode() not in NARRATIVE["envelope"].encode()


def test_the_generator_writes_the_committed_vectors_byte_for_byte(tmp_path: Path) -> None:
    """The committed vectors are what scripts/make_vectors.py makes from today's
    code: none was edited by hand, and none depends on the clock or chance."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_vectors", HERE.parent / "scripts" / "make_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.generate(tmp_path)
    committed = HERE / "vectors"
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    wanted = sorted(
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and p.suffix in (".json", ".txt")
    )
    assert made == wanted
    for name in made:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
