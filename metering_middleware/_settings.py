"""Settings declared once: one dataclass field per setting, everything else derived.

A settings class is a frozen dataclass whose fields are made with :func:`setting`: the
field's type annotation says how a value is read (from a keyword argument, a TOML table
or an environment variable), its ``check`` what values it takes, its ``doc`` what it
means. From that one declaration come the readers, every error message (naming the
setting, where the value came from and what is expected) and the README's reference
table (:func:`reference`), so a setting cannot be added to one of them and forgotten in
another.

Why not pydantic-settings: it would make pydantic (and its compiled core) a dependency of
the core package, which needs none today, and importing it costs more than the whole
meter's configuration (``bench/RESULTS.md``, "Start-up"); it also cannot say which source
a bad value came from, nor refuse an unknown ``METERING_*`` variable, both of which this
module exists for. The typing we need is a handful of scalar kinds.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "ARGUMENT",
    "Check",
    "ConfigError",
    "Declared",
    "Kind",
    "Source",
    "check_instance",
    "client_error_status",
    "declared",
    "env_names",
    "from_env",
    "from_table",
    "non_empty",
    "non_negative",
    "one_of",
    "positive",
    "reference",
    "refuse_unknown_env",
    "setting",
    "starts_with",
    "suggest",
]


class ConfigError(ValueError):
    """A setting that cannot be used: the message names it, its source and what it takes."""


@dataclass(frozen=True, slots=True)
class Source:
    """Where values come from, for messages: an argument, a file's table, the environment."""

    kind: Literal["argument", "file", "environment"]
    #: The file's path (``file``), else empty.
    path: str = ""
    #: The table in the file (``metering``, ``gateway.resign``), else empty.
    table: str = ""

    def where(self, name: str, *, env_name: str = "") -> str:
        if self.kind == "environment":
            return f"environment variable {env_name}"
        if self.kind == "file":
            key = f"{self.table}.{name}" if self.table else name
            return f"{self.path}: {key}" if self.path else key
        return f"argument {name}"


ARGUMENT = Source("argument")


class _Bad(Exception):
    """A value a kind or a check refuses (turned into a ConfigError with its place)."""


@dataclass(frozen=True, slots=True)
class Check:
    """A rule a setting's value must follow; ``expected`` completes "must be <expected>"."""

    expected: str
    test: Callable[[Any], bool]


def positive(unit: str = "") -> Check:
    """Above zero: "a positive number of <unit>", or "a positive integer" without a unit."""
    return Check(f"a positive number of {unit}" if unit else "a positive integer", lambda v: v > 0)


def non_negative(what: str) -> Check:
    return Check(what, lambda v: v >= 0)


def one_of(*values: object) -> Check:
    return Check(" or ".join(map(str, values)), lambda v: v in values)


def starts_with(expected: str, *prefixes: str) -> Check:
    return Check(expected, lambda v: v.startswith(prefixes))


def non_empty(expected: str) -> Check:
    return Check(expected, lambda v: bool(v.strip()))


def client_error_status() -> Check:
    return Check("an HTTP client-error status (400-499)", lambda v: 400 <= v <= 499)


class Kind:
    """How a value of one type is read: as a Python/TOML value, and as environment text."""

    expected = "a value"

    def value(self, v: Any) -> Any:
        return v

    def text(self, raw: str) -> Any:
        return self.value(raw)

    def show(self, v: Any) -> str:
        return f"`{v}`"


class _Bool(Kind):
    expected = "true or false"

    def value(self, v: Any) -> Any:
        if not isinstance(v, bool):
            raise _Bad
        return v

    def text(self, raw: str) -> Any:
        low = raw.strip().lower()
        if low not in ("1", "0", "true", "false", "yes", "no"):
            raise _Bad
        return low in ("1", "true", "yes")

    def show(self, v: Any) -> str:
        return "`true`" if v else "`false`"


class _Int(Kind):
    expected = "an integer"

    def value(self, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad
        return v

    def text(self, raw: str) -> Any:
        try:
            return int(raw.strip())
        except ValueError:
            raise _Bad from None


class _Float(Kind):
    expected = "a number"

    def value(self, v: Any) -> Any:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise _Bad
        return v

    def text(self, raw: str) -> Any:
        try:
            value = float(raw.strip())
        except ValueError:
            raise _Bad from None
        if value != value or value in (float("inf"), float("-inf")):
            raise _Bad
        return value


class _Str(Kind):
    expected = "a string"

    def value(self, v: Any) -> Any:
        if not isinstance(v, str):
            raise _Bad
        return v


class _Choice(Kind):
    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices
        self.expected = "one of " + ", ".join(choices)

    def value(self, v: Any) -> Any:
        if v not in self.choices:
            raise _Bad
        return v


class _StrSet(Kind):
    expected = "a list of strings"

    def value(self, v: Any) -> Any:
        if isinstance(v, str | bytes) or not isinstance(v, Iterable):
            raise _Bad
        items = list(v)
        if not all(isinstance(i, str) for i in items):
            raise _Bad
        return frozenset(items)

    def text(self, raw: str) -> Any:
        return frozenset(p.strip() for p in raw.split(",") if p.strip())

    def show(self, v: Any) -> str:
        return "`[" + ", ".join(f'"{i}"' for i in sorted(v)) + "]`"


class _Optional(Kind):
    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.expected = inner.expected

    def value(self, v: Any) -> Any:
        return None if v is None else self.inner.value(v)

    def text(self, raw: str) -> Any:
        # An empty variable unsets the setting (``METERING_JOURNAL_PATH=``).
        return None if raw == "" else self.inner.text(raw)


@dataclass(frozen=True, slots=True)
class _Declaration:
    doc: str
    check: Check | None
    kind: Kind | None
    secret: bool
    in_file: bool
    shown_default: str | None
    unit: str


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    check: Check | None = None,
    kind: Kind | None = None,
    secret: bool = False,
    in_file: bool = True,
    shown_default: str | None = None,
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A settings field. ``secret``: never in a repr nor a message. ``in_file=False``:
    refused in a TOML file (secrets: files get copied, shown and committed)."""
    meta = {"setting": _Declaration(doc, check, kind, secret, in_file, shown_default, "")}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, repr=not secret, metadata=meta)
    return dataclasses.field(default=default, repr=not secret, metadata=meta)


@dataclass(frozen=True, slots=True)
class Declared:
    name: str
    kind: Kind
    check: Check | None
    doc: str
    secret: bool
    in_file: bool
    default: Any
    shown_default: str | None

    @property
    def expected(self) -> str:
        if self.check is None:
            return self.kind.expected
        if isinstance(self.kind, _Choice | _Bool):
            return self.kind.expected
        return self.check.expected if self.check.expected else self.kind.expected


_DECLARED: dict[type, dict[str, Declared]] = {}


def _kind_of(hint: Any) -> Kind:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = (a for a in args if a is not type(None))
        return _Optional(_kind_of(inner))
    if origin is Literal:
        return _Choice(tuple(str(a) for a in args))
    if origin is frozenset:
        return _StrSet()
    simple: dict[Any, Kind] = {bool: _Bool(), int: _Int(), float: _Float(), str: _Str()}
    if hint in simple:
        return simple[hint]
    raise TypeError(f"no settings kind for {hint!r}: pass kind=")


def declared(cls: type) -> dict[str, Declared]:
    """Every setting ``cls`` declares, by name, in declaration order."""
    found = _DECLARED.get(cls)
    if found is None:
        hints = typing.get_type_hints(cls)
        found = {}
        for f in dataclasses.fields(cls):
            decl = f.metadata.get("setting")
            if not isinstance(decl, _Declaration):
                continue
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            found[f.name] = Declared(
                f.name,
                decl.kind or _kind_of(hints[f.name]),
                decl.check,
                decl.doc,
                decl.secret,
                decl.in_file,
                default,
                decl.shown_default,
            )
        _DECLARED[cls] = found
    return found


def suggest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean x?)`` when a known name is close, else empty."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _message(d: Declared, where: str, value: Any) -> str:
    shown = "the value (not shown)" if d.secret else repr(value)
    return f"{where}: must be {d.expected}, not {shown}"


def _checked(d: Declared, value: Any, where: str, *, from_text: bool) -> Any:
    try:
        out = d.kind.text(value) if from_text else d.kind.value(value)
    except _Bad:
        raise ConfigError(_message(d, where, value)) from None
    if out is not None and d.check is not None:
        try:
            ok = d.check.test(out)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(_message(d, where, value))
    return out


def check_instance(obj: Any, source: Source = ARGUMENT) -> dict[str, Any]:
    """Check every declared field of a built settings object; return the normalised values
    that differ from what was given (e.g. a list made a frozenset)."""
    changed: dict[str, Any] = {}
    for name, d in declared(type(obj)).items():
        given = getattr(obj, name)
        out = _checked(d, given, source.where(name), from_text=False)
        if out is not given:
            changed[name] = out
    return changed


def from_table(
    cls: type, doc: Mapping[str, Any], source: Source, *, env_prefix: str
) -> dict[str, Any]:
    """Read a TOML table: unknown keys (with a suggestion), secrets inline, bad values."""
    known = declared(cls)
    values: dict[str, Any] = {}
    for key, value in doc.items():
        d = known.get(key)
        if d is None:
            raise ConfigError(f"{source.where(key)}: unknown setting{suggest(key, known)}")
        if not d.in_file:
            raise ConfigError(
                f"{source.where(key)}: never inline in a file; set "
                f"{env_prefix}{key.upper()} or {key}_file"
            )
        values[key] = _checked(d, value, source.where(key), from_text=False)
    return values


def from_env(cls: type, environ: Mapping[str, str], prefix: str) -> dict[str, Any]:
    """The settings of ``cls`` set as ``<prefix><NAME>`` variables (the caller refuses
    unknown variables of its prefixes, knowing every class sharing them)."""
    values: dict[str, Any] = {}
    for name, d in declared(cls).items():
        env_name = prefix + name.upper()
        raw = environ.get(env_name)
        if raw is not None:
            where = Source("environment").where(name, env_name=env_name)
            values[name] = _checked(d, raw, where, from_text=True)
    return values


def env_names(cls: type, prefix: str) -> set[str]:
    return {prefix + name.upper() for name in declared(cls)}


def refuse_unknown_env(
    environ: Mapping[str, str], prefixes: tuple[str, ...], known: set[str]
) -> None:
    """A ``METERING_*``/``GATEWAY_*`` variable nobody reads is a typo: refuse it."""
    for name in sorted(environ):
        if name.startswith(prefixes) and name not in known:
            raise ConfigError(f"environment variable {name}: unknown setting{suggest(name, known)}")


def reference(cls: type, *, skip: Iterable[str] = ()) -> str:
    """The Markdown table of ``cls``'s settings (setting, default, meaning)."""
    rows = ["| setting | default | meaning |", "| --- | --- | --- |"]
    skipped = set(skip)
    for name, d in declared(cls).items():
        if name in skipped:
            continue
        if d.shown_default is not None:
            default = d.shown_default
        elif d.default is None or d.default == {}:
            default = "unset"
        else:
            default = d.kind.show(d.default)
        rows.append(f"| `{name}` | {default} | {d.doc} |")
    return "\n".join(rows) + "\n"
