"""Settings of the meter, declared once (:mod:`._settings`), read alike from keyword
arguments, a TOML table and ``METERING_*`` environment variables.

Every value is validated when the settings are built, with a message naming the setting,
where its value came from and what it takes, so a gateway refuses to start on a bad
configuration instead of failing on its first call. Precedence, lowest first: the
defaults, a TOML file's ``[metering]`` table, the environment, keyword arguments
(:meth:`MeteringConfig.load`). ``MeteringConfig(...)`` itself reads arguments only.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from ._settings import (
    ARGUMENT,
    Check,
    ConfigError,
    Kind,
    Source,
    _Bad,
    check_instance,
    client_error_status,
    declared,
    env_names,
    from_env,
    from_table,
    non_empty,
    non_negative,
    one_of,
    positive,
    refuse_unknown_env,
    setting,
    starts_with,
    suggest,
)
from .errors import DEFAULT_CHARGEABLE_CODES

__all__ = ["ENV_PREFIX", "OTHER_ENV", "ConfigError", "MeteringConfig"]

ENV_PREFIX = "METERING_"

#: ``METERING_*`` variables read elsewhere than these settings (so not typos).
OTHER_ENV = frozenset(
    {
        "METERING_SECRET_KEY",  # Fernet keys for AccessKey secrets at rest (credentials.py)
    }
)

Mode = Literal["strict", "batched"]


class _Overrides(Kind):
    """``category_overrides``: ``{(action, version): category}`` as an argument,
    ``"Action@Version" = "category"`` in a file, ``Action@Version=category,...`` as text."""

    expected = "a table of 'Action@Version' = 'category'"

    def value(self, v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise _Bad
        out: dict[tuple[str, str], str] = {}
        for pair, category in v.items():
            if isinstance(pair, tuple) and len(pair) == 2:
                action, version = pair
                ok = isinstance(action, str) and isinstance(version, str)
            else:
                action, sep, version = str(pair).partition("@")
                ok = bool(sep)
            if not ok or not action or not version or not isinstance(category, str):
                raise _Bad
            out[(action, version)] = category
        return out

    def text(self, raw: str) -> Any:
        return self.value(dict(p.strip().split("=", 1) for p in raw.split(",") if "=" in p))

    def show(self, v: Any) -> str:
        return "none"


class _Budgets(Kind):
    """``upstream_qps``: ``{"facebody": 50, "facebody.DetectFace": 100}`` as an argument or
    a TOML table (an unquoted ``facebody.DetectFace`` key, a nested table, is flattened),
    ``facebody=50,facebody.DetectFace=100`` as text. The limiter checks it again
    (``limiter.budget``) and against the catalog at start."""

    expected = 'a table of <category> or "<category>.<Action>" = QPS (a positive integer)'

    def value(self, v: Any) -> Any:
        if not isinstance(v, Mapping):
            raise _Bad
        out: dict[str, int] = {}
        for name, qps in v.items():
            pairs = (
                [(f"{name}.{a}", n) for a, n in qps.items()]
                if isinstance(qps, Mapping)
                else [(str(name), qps)]
            )
            for key, n in pairs:
                category, dot, action = key.partition(".")
                if not category or (dot and not action) or "." in action:
                    raise _Bad
                if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                    raise _Bad
                out[key] = n
        return out

    def text(self, raw: str) -> Any:
        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, sep, n = part.partition("=")
            if not sep or not n.strip().isdigit():
                raise _Bad
            out[key.strip()] = int(n)
        return self.value(out)

    def show(self, v: Any) -> str:
        return "none"


_SECONDS = positive("seconds")
_COUNT = positive()
_HTTP = starts_with("an http(s) URL", "http://", "https://")


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    ledger_url: str = setting(
        "sqlite:///metering-ledger.sqlite",
        check=non_empty("a ledger URL"),
        doc="`sqlite:///relative.sqlite`, `sqlite:////absolute.sqlite` (options "
        "`?synchronous=NORMAL`, `?busy_timeout_ms=2000`), `postgresql://user@host/db` ("
        "ledger, credentials, plans, settlement, balances and reports; not notices or the "
        "admin API yet: [docs/postgresql.md](docs/postgresql.md)), "
        "`memory://` (tests)",
    )
    mode: Mode = setting(
        "strict",
        doc="`strict` (no client holds a complete chargeable response before its record is "
        "committed, synchronous=FULL) or `batched` (a batch gathers `flush_interval` "
        "before its commit starts)",
    )
    flush_interval: float = setting(
        0.05,
        check=_SECONDS,
        doc="batched: seconds a batch gathers before its commit starts (a kill loses up to "
        "this plus one commit)",
    )
    journal_path: str | None = setting(
        None,
        shown_default="ledger path + `.journal`",
        doc="the append-only fallback journal used while the store fails; one per process "
        "(several processes on one ledger: each its own, "
        "[docs/operations.md](docs/operations.md))",
    )
    chargeable_codes: frozenset[str] = setting(
        DEFAULT_CHARGEABLE_CODES,
        doc="error codes charged whatever the status (200 is always charged)",
    )
    max_body_bytes: int = setting(
        8 * 1024 * 1024, check=_COUNT, doc="larger request bodies are refused (413)"
    )
    max_header_bytes: int = setting(
        32 * 1024,
        check=_COUNT,
        doc="bytes of request line and headers; larger heads are refused (431) before "
        "anything reads them",
    )
    max_header_count: int = setting(
        100, check=_COUNT, doc="requests with more headers are refused (431)"
    )
    error_body_limit: int = setting(
        64 * 1024, check=_COUNT, doc="bytes of a non-200 body kept to read its code"
    )
    trusted_hop_header: str = setting("x-metering-trusted-hop", doc="stripped before forwarding")
    trusted_hop_secret: str | None = setting(
        None,
        secret=True,
        check=Check("at least 16 characters", lambda v: len(v) >= 16),
        doc="an internal hop sending it in `trusted_hop_header` skips signature checks "
        "(identity still required); at least 16 characters",
    )
    category_overrides: Mapping[tuple[str, str], str] = setting(
        kind=_Overrides(),
        default_factory=dict,
        doc='`"Action@Version" = "category"` for pairs the catalog cannot tell apart',
    )
    catalog_path: str | None = setting(
        None, shown_default="packaged catalog", doc="your own catalog file (below)"
    )
    credential_refresh: float = setting(
        1.0, check=_SECONDS, doc="seconds between reloads of the cached AccessKeys"
    )
    signature_window: float = setting(
        900.0, check=_SECONDS, doc="allowed clock skew of signed requests, seconds"
    )
    enforce_qps: bool = setting(
        True, doc="refuse calls above the account's QPS entitlement per API"
    )
    limiter_url: str = setting(
        "memory://",
        check=starts_with("memory:// or redis://", "memory://", "redis://", "rediss://", "unix://"),
        doc="`memory://` (one gateway process per ledger, enforced by a lock file; "
        "`gateway_processes` or `limiter_processes` above 1 is refused at start) or "
        "`redis://host:port/db` (shared by many processes; also shares nonces)",
    )
    limiter_failure_policy: Literal["open", "closed", "local"] = setting(
        "local",
        doc="while Redis fails: `open` admits, `closed` answers 503, `local` admits N/P "
        "per process",
    )
    limiter_processes: int = setting(
        1, check=_COUNT, doc="P, the gateway processes sharing one Redis (`local` policy)"
    )
    throttle_status: int = setting(
        429,
        check=one_of(429, 400),
        doc="status of `Throttling.User` refusals: 429, or 400 as VIAPI answers",
    )
    upstream_qps: Mapping[str, int] = setting(
        kind=_Budgets(),
        default_factory=dict,
        doc="the operator's own QPS at Alibaba per API, shared by every tenant and process: "
        "a table (`[metering.upstream_qps]`) of `category = N` (each API of the category) "
        'and `"category.Action" = N` (one API); as text `facebody=50,facebody.DetectFace=100`. '
        "A call over it is refused, free "
        "([docs/limiter.md](docs/limiter.md#the-operators-upstream-budget))",
    )
    upstream_throttle_code: str = setting(
        "Throttling.Api",
        check=non_empty("a non-empty error code"),
        doc="code of a refusal over `upstream_qps`",
    )
    upstream_throttle_status: int = setting(
        429, check=one_of(429, 400, 503), doc="its status: 429, 400 or 503"
    )
    entitlement_refresh: float = setting(
        1.0,
        check=_SECONDS,
        doc="seconds between reloads of the cached entitlements (plan changes)",
    )
    settle_interval: float = setting(
        0.0,
        check=Check("zero (off) or a positive number of seconds", lambda v: v >= 0),
        shown_default="`0` (the example gateway: `60`)",
        doc="seconds between settlement passes run by this process, in a worker thread off "
        "the event loop (several processes: one settles at a time, by the settlement "
        "lock); `0`: settle with `metering settle` only",
    )
    webhook_url: str | None = setting(
        None,
        check=_HTTP,
        doc="where notices are POSTed, signed ([docs/notices.md](docs/notices.md)); unset: "
        "notices are recorded and listed (`metering notices`) only. Logged as its host only",
    )
    webhook_secret: str | None = setting(
        None,
        secret=True,
        in_file=False,
        doc="the signing secret, `whsec_<base64>` (Standard Webhooks) or at least 16 "
        "characters: only from `METERING_WEBHOOK_SECRET` or `webhook_secret_file`, refused "
        "inline in a TOML file; never logged nor shown",
    )
    webhook_secret_file: str | None = setting(
        None, doc="a file whose first line is the signing secret"
    )
    webhook_timeout: float = setting(
        10.0,
        check=_SECONDS,
        doc="seconds one delivery attempt may take; longer is a failed attempt",
    )
    webhook_max_attempts: int = setting(
        8,
        check=_COUNT,
        doc="attempts per notice (exponential backoff from 5 s, capped at 1 h, full "
        "jitter) before it stays `failed`",
    )
    webhook_poll_interval: float = setting(
        1.0, check=_SECONDS, doc="seconds between looks for due deliveries"
    )
    enforce_balance: bool = setting(
        False,
        shown_default="`false` (the example gateway: `true`)",
        doc="refuse calls of overdue, suspended or held accounts (`Account.Arrearage`) and "
        "pay-as-you-go calls the balance or monthly cap cannot pay "
        "(`Account.SpendCapExceeded`); needs an SQLite ledger (docs/standing.md)",
    )
    standing_refresh: float = setting(
        1.0,
        check=_SECONDS,
        doc="seconds between reloads of the cached balances, standing, caps and settled horizon",
    )
    arrearage_code: str = setting(
        "Account.Arrearage",
        check=non_empty("a non-empty error code"),
        doc="code of the refusal for arrears (VIAPI answers `InvalidApi.ForbiddenInvoke`)",
    )
    arrearage_status: int = setting(
        403, check=client_error_status(), doc="its status (4xx; VIAPI: 400)"
    )
    spend_cap_code: str = setting(
        "Account.SpendCapExceeded",
        check=non_empty("a non-empty error code"),
        doc="code of a spend-guard or monthly-cap refusal",
    )
    spend_cap_status: int = setting(403, check=client_error_status(), doc="its status (4xx)")
    gateway_processes: int = setting(
        1,
        check=_COUNT,
        doc="N, the gateway processes on one ledger: each guards 1/N of a balance and of a "
        "cap between settlements",
    )

    retention_interval: float = setting(
        0.0,
        check=Check("zero (off) or a positive number of seconds", lambda v: v >= 0),
        shown_default="`0` (the example gateway: `3600`)",
        doc="seconds between retention passes of this process, off the event loop: expired "
        "nonces, and counters older than `counter_retention_days` "
        "([docs/operations.md](docs/operations.md)); `0`: none (`metering prune` by hand)",
    )
    counter_retention_days: int = setting(
        0,
        check=non_negative("0 (keep forever) or a number of days"),
        doc="days of per-minute outcome counters kept (usage reports read them); `0`: "
        "forever; the current and previous billing month are always kept",
    )
    retention_batch: int = setting(
        1000,
        check=_COUNT,
        doc="rows per retention delete transaction (~9 ms of write lock each, measured)",
    )
    log_format: Literal["text", "json"] = setting(
        "text",
        doc="`text`: the meter's lines go where your logging sends them; `json`: one JSON "
        "object a line on stderr for the `metering_middleware` loggers while the runtime "
        "runs (the example gateway: uvicorn's and its own lines too) "
        "([docs/logging.md](docs/logging.md))",
    )

    def __post_init__(self) -> None:
        # Arguments are checked by the same declaration as files and variables; values
        # read from those were checked with their source already and pass again.
        for name, value in check_instance(self, ARGUMENT).items():
            object.__setattr__(self, name, value)
        if self.webhook_secret is not None:
            _check_webhook_secret(self.webhook_secret, "webhook_secret")

    @classmethod
    def load(
        cls,
        arguments: Mapping[str, Any] | None = None,
        *,
        table: Mapping[str, Any] | None = None,
        file: str = "",
        environ: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
    ) -> MeteringConfig:
        """Defaults, then ``defaults``, then a file's ``[metering]`` ``table``, then the
        environment (``os.environ`` unless given; unknown ``METERING_*`` variables are
        refused), then ``arguments``: the later wins."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = dict(defaults or {})
        if table is not None:
            values.update(
                from_table(cls, table, Source("file", file, "metering"), env_prefix=ENV_PREFIX)
            )
        refuse_unknown_env(env, (ENV_PREFIX,), env_names(cls, ENV_PREFIX) | OTHER_ENV)
        values.update(from_env(cls, env, ENV_PREFIX))
        values.update(cls._arguments(arguments or {}))
        return cls(**values)

    @classmethod
    def from_arguments(cls, arguments: Mapping[str, Any]) -> MeteringConfig:
        """Keyword arguments alone (``MeteringMiddleware(app, **settings)``): an unknown
        name is a ``ConfigError`` with a suggestion, not a ``TypeError``."""
        return cls(**cls._arguments(arguments))

    @classmethod
    def _arguments(cls, arguments: Mapping[str, Any]) -> dict[str, Any]:
        known = declared(cls)
        for name in arguments:
            if name not in known:
                raise ConfigError(f"argument {name}: unknown setting{suggest(name, known)}")
        return dict(arguments)

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, where: str = "metering") -> MeteringConfig:
        """Build from a TOML table (``[metering]``) alone; unknown keys are errors."""
        values = from_table(cls, doc, Source("file", "", where), env_prefix=ENV_PREFIX)
        return cls(**values)

    def webhook_signing_secret(self) -> str | None:
        """The webhook secret: ``webhook_secret`` (the environment), else the first line
        of ``webhook_secret_file``; None without a ``webhook_url``. ``ConfigError`` when a
        URL has no usable secret (the message never contains the secret)."""
        if self.webhook_url is None:
            return None
        secret = self.webhook_secret
        if secret is None and self.webhook_secret_file:
            try:
                with open(self.webhook_secret_file, encoding="utf-8") as fh:
                    secret = fh.readline().strip()
            except OSError as exc:
                raise ConfigError(
                    f"webhook_secret_file: {exc.strerror}: {self.webhook_secret_file}"
                ) from None
            _check_webhook_secret(secret, "webhook_secret_file")
        if secret is None:
            raise ConfigError(
                f"webhook_url: set {ENV_PREFIX}WEBHOOK_SECRET or webhook_secret_file "
                "(deliveries are always signed)"
            )
        return secret

    def with_env(self, environ: Mapping[str, str] | None = None) -> MeteringConfig:
        """Overlay ``METERING_<SETTING>`` environment variables (unknown ones refused)."""
        env = os.environ if environ is None else environ
        refuse_unknown_env(env, (ENV_PREFIX,), env_names(type(self), ENV_PREFIX) | OTHER_ENV)
        values = from_env(type(self), env, ENV_PREFIX)
        return replace(self, **values) if values else self


def _check_webhook_secret(secret: str, where: str) -> None:
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[6:], validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(f"{where}: a whsec_ secret must be base64 after its prefix") from None
        if len(key) < 16:
            raise ConfigError(f"{where}: a whsec_ secret needs at least 16 bytes of key")
    elif len(secret) < 16:
        raise ConfigError(f"{where}: use at least 16 characters")
