"""Stored events are decoded through orjson where it is installed: the answers, errors
and so verify's findings must be exactly the standard decoder's, whichever is used."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ledger.verify as verify
from ledger.verify import FormatError, fast_decodable, parse_envelope, stream_id
from tests.conftest import World


def same(a: Any, b: Any) -> bool:
    """Equal and of the same types all the way down (1 is not 1.0 or True; key order
    counts; -0.0 is not 0.0); without recursion, for deeply nested values."""
    pending = [(a, b)]
    while pending:
        x, y = pending.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, dict):
            if list(x) != list(y):
                return False
            pending += [(x[k], y[k]) for k in x]
        elif isinstance(x, list):
            if len(x) != len(y):
                return False
            pending += list(zip(x, y, strict=True))
        elif isinstance(x, float):
            if not (math.isnan(x) and math.isnan(y)) and not (
                x == y and math.copysign(1, x) == math.copysign(1, y)
            ):
                return False
        elif x != y:
            return False
    return True


def outcome(f: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "value", f()
    except (FormatError, ValueError, UnicodeDecodeError, RecursionError) as e:
        return type(e).__name__, str(e)


def both_ways(monkeypatch: pytest.MonkeyPatch, f: Callable[[], Any]) -> tuple[Any, Any]:
    fast = outcome(f)
    with monkeypatch.context() as m:
        m.setattr(verify, "_orjson", None)
        standard = outcome(f)
    return fast, standard


def agree(fast: tuple[str, Any], standard: tuple[str, Any]) -> bool:
    if fast[0] != standard[0]:
        return False
    if fast[0] != "value":
        return bool(fast[1] == standard[1])
    if isinstance(fast[1], verify.Envelope):
        return same(fast[1].body, standard[1].body) and fast[1] == standard[1]
    return same(fast[1], standard[1])


def stored_event(world: World) -> bytes:
    """The stored bytes of an agency's event, as written."""
    if not getattr(world, "appended", False):
        world.append("police-a")
        world.appended = True  # type: ignore[attr-defined]
    return next(iter(world.ledger.case_envelopes("C-1"))).raw


def test_orjson_is_what_decodes_a_typical_event(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed with the ledger, and asked: otherwise the rest proves nothing."""
    orjson = vars(verify)["_orjson"]
    assert orjson is not None
    raw = stored_event(world)
    # About one event in a hundred has 19 digits in a row in a hash or key id (random
    # hex), which the standard decoder reads instead: not the typical event meant here.
    while not fast_decodable(raw):
        raw = world.ledger.stored_envelope(stream_id("case/C-1"), world.append("police-a").seq).raw
    asked: list[Any] = []
    real = orjson.loads

    class Counting:
        JSONDecodeError = orjson.JSONDecodeError

        @staticmethod
        def loads(data: Any) -> Any:
            asked.append(data)
            return real(data)

    monkeypatch.setattr(verify, "_orjson", Counting)
    parse_envelope(raw)
    assert len(asked) == 2  # the envelope and the body in it


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(value=json_values, ascii_only=st.booleans())
def test_any_json_text_decodes_as_the_standard_decoder_has_it(value: Any, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate unescaped: not UTF-8 at all
        data = text.encode("utf-8", "surrogatepass")
    fast = outcome(lambda: verify._loads(data))
    standard = outcome(lambda: verify._decode(data.decode("utf-8")))
    assert agree(fast, standard), (text, fast, standard)


@pytest.mark.parametrize(
    "text",
    [
        b'{"a":1,"b":2,"a":3}',  # a repeated key: the last value, in the first place
        b"[18446744073709551616]",  # past 64 bits: an int, never a float
        b"[-9223372036854775809]",
        b"[1e400]",
        b'{"v":NaN}',
        b'["\\ud800"]',
        b"\xef\xbb\xbf{}",
        b" {} ",
        b"[" * 599 + b"]" * 599,
        b"[" * 1000 + b"]" * 1000,  # past the standard decoder's depth, not orjson's
        b"[" * 2000 + b"]" * 2000,
        b'["\xed\xa0\x80"]',
        b"[0.1e1, -0.0, -0, 1E2, 1e-400]",
    ],
)
def test_texts_where_the_decoders_part_ways_decode_the_standard_way(text: bytes) -> None:
    fast = outcome(lambda: verify._loads(text))
    standard = outcome(lambda: verify._decode(text.decode("utf-8")))
    assert agree(fast, standard), (text, fast, standard)


def test_what_could_part_the_decoders_is_left_to_the_standard_one() -> None:
    assert fast_decodable(b'{"a":123456789012345678}')
    assert not fast_decodable(b'{"a":1234567890123456789}')
    assert not fast_decodable(b"[" * 601 + b"]" * 601)


def envelope_with_body(body_text: str) -> bytes:
    return json.dumps(
        {
            "body": body_text,
            "prev_hash": None,
            "recorded_at": "2025-01-01T00:00:00.000000Z",
            "seq": 1,
            "sig": "AAAA",
            "v": 1,
        },
        separators=(",", ":"),
        sort_keys=True,
    ).encode()


def test_digits_spelled_as_escapes_in_the_envelope_are_seen_in_the_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The body's text is the envelope's string unescaped: 25 digits written as
    \\u escapes are no long number to the envelope, but are one to the body."""
    body = (
        '{"actor":{},"agency":"a","case_id":"C-1","corrects":null,"event_id":"e",'
        '"key_id":"k","occurred_at":"2025-01-01T00:00:00Z","payload":{"n":NUMBER},'
        '"responds_to":[],"type":"T","v":1}'
    )
    raw = envelope_with_body(body).replace(b"NUMBER", b"\\u0031" * 25)
    assert fast_decodable(raw)
    fast, standard = both_ways(monkeypatch, lambda: parse_envelope(raw))
    assert fast[0] == "value" and isinstance(fast[1].body["payload"]["n"], int)
    assert agree(fast, standard)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_any_change_to_a_stored_event_reads_the_same_either_way(
    world: World, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    raw = bytearray(stored_event(world))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(
            st.integers(0, 255) | st.sampled_from(list(b'{}[]":,\\0123456789eE.-+ntfu '))
        )
    fast, standard = both_ways(monkeypatch, lambda: parse_envelope(bytes(raw)))
    assert agree(fast, standard), (bytes(raw), fast, standard)
