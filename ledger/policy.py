"""Response-standards policy: load, validate and hash; evaluate `when` conditions.

The default policy ships in `ledger/policy_data/`; a deployment may pass its own
(`--policy` / `LEDGER_POLICY`). Its id and hash go into every breach event, so a
replay knows which standard applied. Conditions are a small, safe language:
`field == value`, `!=`, `<`, `<=`, `>`, `>=`, `in [a, b]`, `intersects [a, b]`,
`and`, `or`, `not`, parentheses; bare words are strings, `null` is absent.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic import ValidationError as PydanticValidationError

from .canonical import canonical
from .clock import Clock
from .errors import UsageError
from .events import CASE_TYPES

DEFAULT_POLICY = Path(__file__).resolve().parent / "policy_data" / "response_standards.yaml"
LANGUAGE_FLAGS = Path(__file__).resolve().parent / "policy_data" / "language_flags.yaml"

Condition = Callable[[Mapping[str, Any]], bool]
_TOKEN = re.compile(r"\s*(==|!=|<=|>=|<|>|\(|\)|\[|\]|,|[A-Za-z0-9_.\-]+)")


_WORDS: dict[str, Any] = {"true": True, "false": False, "null": None}


def _literal(token: str) -> Any:
    if token in _WORDS:
        return _WORDS[token]
    if re.fullmatch(r"-?\d+", token):
        return int(token)
    return token


def compile_condition(text: str) -> Condition:
    """Compile a `when` expression; raise ValueError saying where it is malformed."""
    tokens = _TOKEN.findall(text)
    if "".join(tokens).replace(" ", "") != text.replace(" ", ""):
        raise ValueError(f"cannot read condition {text!r}")
    pos = 0

    def peek() -> str | None:
        return str(tokens[pos]) if pos < len(tokens) else None

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"condition {text!r} ends early")
        token = str(tokens[pos])
        if expected is not None and token != expected:
            raise ValueError(f"condition {text!r}: expected {expected!r}, found {token!r}")
        pos += 1
        return token

    def parse_or() -> Condition:
        left = parse_and()
        while peek() == "or":
            take()
            right = parse_and()
            left = (lambda a, b: lambda ctx: a(ctx) or b(ctx))(left, right)
        return left

    def parse_and() -> Condition:
        left = parse_not()
        while peek() == "and":
            take()
            right = parse_not()
            left = (lambda a, b: lambda ctx: a(ctx) and b(ctx))(left, right)
        return left

    def parse_not() -> Condition:
        if peek() == "not":
            take()
            inner = parse_not()
            return lambda ctx: not inner(ctx)
        if peek() == "(":
            take("(")
            inner = parse_or()
            take(")")
            return inner
        return parse_comparison()

    def parse_list() -> list[Any]:
        take("[")
        items: list[Any] = []
        while peek() != "]":
            items.append(_literal(take()))
            if peek() == ",":
                take(",")
        take("]")
        return items

    def parse_comparison() -> Condition:
        field = take()
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", field):
            raise ValueError(f"condition {text!r}: {field!r} is not a field name")
        op = take()
        if op in ("in", "intersects"):
            values = parse_list()
            if op == "in":
                return lambda ctx: ctx.get(field) in values
            return lambda ctx: bool(set(ctx.get(field) or []) & set(values))
        if op not in ("==", "!=", "<", "<=", ">", ">="):
            raise ValueError(f"condition {text!r}: unknown operator {op!r}")
        value = _literal(take())
        compare: dict[str, Callable[[Any], bool]] = {
            "==": lambda x: x == value,
            "!=": lambda x: x != value,
            "<": lambda x: x is not None and x < value,
            "<=": lambda x: x is not None and x <= value,
            ">": lambda x: x is not None and x > value,
            ">=": lambda x: x is not None and x >= value,
        }
        check = compare[op]
        return lambda ctx: bool(check(ctx.get(field)))

    result = parse_or()
    if pos != len(tokens):
        raise ValueError(f"condition {text!r}: unexpected {tokens[pos]!r}")
    return result


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Period(_Model):
    value: Annotated[int, Field(ge=0)]
    clock: Clock


class Override(_Model):
    when: str
    value: Annotated[int, Field(ge=0)]

    @field_validator("when")
    @classmethod
    def _compiles(cls, v: str) -> str:
        compile_condition(v)
        return v


class ByField(_Model):
    field: str
    values: dict[str, Period]


class Deadline(_Model):
    value: Annotated[int, Field(ge=0)]
    clock: Clock
    overrides: list[Override] = Field(default_factory=list)
    by_field: ByField | None = None


def _known_types(v: list[str]) -> list[str]:
    for t in v:
        if t not in CASE_TYPES:
            raise ValueError(f"unknown event type {t!r}")
    return v


class Rule(_Model):
    id: str
    title: str
    failure: str
    trigger: list[str]
    when: str | None = None
    satisfied_by: list[str]
    require_all: bool = False
    deadline: Deadline
    clock_from: Literal["trigger", "latest_trigger", "responds_to"] = "trigger"
    recurring: bool = False
    until: list[str] = Field(default_factory=list)
    owing: list[str]
    source: str
    status: Literal["statutory", "statutory_guidance", "local_default", "unsourced"]

    _types = field_validator("trigger", "satisfied_by", "until")(_known_types)

    @field_validator("when")
    @classmethod
    def _compiles(cls, v: str | None) -> str | None:
        if v is not None:
            compile_condition(v)
        return v

    @cached_property
    def condition(self) -> Condition | None:
        return None if self.when is None else compile_condition(self.when)

    @cached_property
    def override_conditions(self) -> list[tuple[Condition, Period]]:
        clock = self.deadline.clock
        return [
            (compile_condition(o.when), Period(value=o.value, clock=clock))
            for o in self.deadline.overrides
        ]

    @cached_property
    def default_period(self) -> Period:
        return Period(value=self.deadline.value, clock=self.deadline.clock)

    def period(self, ctx: Mapping[str, Any]) -> Period:
        """The deadline that applies given the trigger's context (RAG rating, age...)."""
        d = self.deadline
        if d.by_field is not None:
            chosen = d.by_field.values.get(str(ctx.get(d.by_field.field)))
            if chosen is not None:
                return chosen
        for check, period in self.override_conditions:
            if check(ctx):
                return period
        return self.default_period


class Pattern(_Model):
    id: str
    title: str
    counts: list[str]
    when: str | None = None
    factors: list[str] = Field(default_factory=list)
    window_months: Annotated[int, Field(ge=1)]
    threshold: Annotated[int, Field(ge=2)]
    source: str
    status: Literal["statutory", "statutory_guidance", "local_default", "unsourced"]

    _types = field_validator("counts")(_known_types)

    @cached_property
    def condition(self) -> Condition | None:
        return None if self.when is None else compile_condition(self.when)


class PolicyDocument(_Model):
    id: str
    version: str
    rules: list[Rule]
    patterns: list[Pattern] = Field(default_factory=list)


@dataclass(frozen=True)
class Policy:
    document: PolicyDocument
    hash: str

    @property
    def id(self) -> str:
        return f"{self.document.id}@{self.document.version}"

    def _index(self, field: str) -> dict[str, list[Rule]]:
        out: dict[str, list[Rule]] = {}
        for rule in self.document.rules:
            for t in getattr(rule, field):
                out.setdefault(t, []).append(rule)
        return out

    @cached_property
    def by_trigger(self) -> dict[str, list[Rule]]:
        return self._index("trigger")

    @cached_property
    def by_satisfier(self) -> dict[str, list[Rule]]:
        return self._index("satisfied_by")

    @cached_property
    def by_until(self) -> dict[str, list[Rule]]:
        return self._index("until")


def _describe(e: PydanticValidationError, raw: Any) -> str:
    first = e.errors()[0]
    loc = list(first["loc"])
    where = ".".join(str(p) for p in loc)
    if len(loc) >= 2 and loc[0] in ("rules", "patterns") and isinstance(loc[1], int):
        with contextlib.suppress(KeyError, IndexError, TypeError, AttributeError):
            where = f"{loc[0][:-1]} {raw[loc[0]][loc[1]].get('id', loc[1])}, field " + ".".join(
                str(p) for p in loc[2:]
            )
    return f"{where}: {first['msg']}"


def load_policy(path: Path | str | None = None) -> Policy:
    """The policy at `path`, `$LEDGER_POLICY`, or the default; UsageError if invalid."""
    chosen = Path(path or os.environ.get("LEDGER_POLICY") or DEFAULT_POLICY)
    try:
        raw = yaml.safe_load(chosen.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"cannot read policy {chosen}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"policy {chosen} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise UsageError(f"policy {chosen} is not valid YAML: {e}") from None
    try:
        document = PolicyDocument.model_validate(raw)
    except PydanticValidationError as e:
        raise UsageError(f"invalid policy {chosen}: {_describe(e, raw)}") from None
    ids = [r.id for r in document.rules] + [p.id for p in document.patterns]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise UsageError(f"invalid policy {chosen}: rule id {duplicates[0]} is used twice")
    digest = hashlib.sha256(canonical(document.model_dump(mode="json"))).hexdigest()
    return Policy(document, digest)


@lru_cache(maxsize=8)
def _language_flags(path: Path) -> tuple[dict[str, Any], ...]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return tuple(data["terms"])


def load_language_flags(path: Path = LANGUAGE_FLAGS) -> list[dict[str, Any]]:
    """The victim-blaming lexicon (read once per process)."""
    return list(_language_flags(path))
