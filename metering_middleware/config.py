"""Settings of the meter, from keyword arguments, a TOML table or the environment.

Every value is validated when the settings are built, with a message naming
the setting, so a gateway refuses to start on a bad configuration instead of
failing on its first call.
"""

from __future__ import annotations

import base64
import binascii
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from .outcome import DEFAULT_CHARGEABLE_CODES

__all__ = ["ENV_PREFIX", "ConfigError", "MeteringConfig"]

ENV_PREFIX = "METERING_"

Mode = Literal["strict", "batched"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


@dataclass(frozen=True, slots=True)
class MeteringConfig:
    #: Where the ledger lives: ``sqlite:///path``, ``memory://`` (tests).
    ledger_url: str = "sqlite:///metering-ledger.sqlite"
    #: ``strict``: no client holds a complete chargeable response before its record
    #: is committed (synchronous=FULL). ``batched``: a batch gathers ``flush_interval``
    #: seconds before its commit starts; a kill loses up to that plus one commit.
    mode: Mode = "strict"
    flush_interval: float = 0.05
    #: Append-only fallback file used while the store fails; default: ledger path + ".journal".
    journal_path: str | None = None
    #: Error codes charged whatever the HTTP status (200 is always charged).
    chargeable_codes: frozenset[str] = DEFAULT_CHARGEABLE_CODES
    #: Request bodies above this many bytes are refused (413 RequestEntityTooLarge).
    max_body_bytes: int = 8 * 1024 * 1024
    #: Request heads above this many bytes (request target and query, header names and
    #: values) are refused (431 RequestHeaderFieldsTooLarge), before anything reads them.
    max_header_bytes: int = 32 * 1024
    #: Requests with more headers than this are refused the same way.
    max_header_count: int = 100
    #: Bounded copy of non-200 bodies kept to read their error code.
    error_body_limit: int = 64 * 1024
    #: An internal hop that sends this header with ``trusted_hop_secret`` skips
    #: signature verification (identity is still required). Off when no secret.
    trusted_hop_header: str = "x-metering-trusted-hop"
    trusted_hop_secret: str | None = field(default=None, repr=False)
    #: (action, version) -> category, for pairs the catalog cannot tell apart.
    category_overrides: Mapping[tuple[str, str], str] = field(default_factory=dict)
    #: A catalog file replacing the packaged one.
    catalog_path: str | None = None
    #: Seconds between refreshes of the cached AccessKey view.
    credential_refresh: float = 1.0
    #: Allowed clock skew of signed requests, seconds (Alibaba: 15 minutes).
    signature_window: float = 900.0
    #: Refuse calls above the account's QPS entitlement per API (``Throttling.User``).
    enforce_qps: bool = True
    #: ``memory://`` (one gateway process per ledger) or ``redis://host:port/db`` (shared;
    #: also shares signature nonces between processes).
    limiter_url: str = "memory://"
    #: While Redis fails: ``open`` admits, ``closed`` answers 503, ``local`` admits N/P.
    limiter_failure_policy: str = "local"
    #: P: gateway processes sharing one Redis (``local`` failure policy).
    limiter_processes: int = 1
    #: Status of a ``Throttling.User`` refusal: 429, or 400 as VIAPI itself answers.
    throttle_status: int = 429
    #: The operator's own QPS at Alibaba per API, shared by every account and gateway
    #: process (docs/limiter.md): ``{"facebody": 50}`` is 50 for each facebody API,
    #: ``{"facebody.DetectFace": 100}`` one API's. A call over it is refused, free.
    upstream_qps: Mapping[str, int] = field(default_factory=dict)
    #: Code and status of that refusal (status 429, 400 or 503).
    upstream_throttle_code: str = "Throttling.Api"
    upstream_throttle_status: int = 429
    #: Seconds between refreshes of the cached QPS entitlements (plan changes).
    entitlement_refresh: float = 1.0
    #: Seconds between settlement passes run by this process, off the event loop (one
    #: settler at a time across processes, by the settlement lock); 0: none (settle with
    #: ``metering settle``). The example gateway's default is 60.
    settle_interval: float = 0.0
    #: Where notices are POSTed, signed (docs/notices.md); none: recorded and listed only.
    webhook_url: str | None = None
    #: The webhook signing secret (``whsec_<base64>``, or at least 16 characters), from
    #: ``METERING_WEBHOOK_SECRET`` or ``webhook_secret_file``: never inline in a file.
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_secret_file: str | None = None
    #: Seconds one webhook attempt may take (connect, send, answer) before it failed.
    webhook_timeout: float = 10.0
    #: Attempts per notice before it is left ``failed`` (visible in ``metering notices``).
    webhook_max_attempts: int = 8
    #: Seconds between looks for due deliveries.
    webhook_poll_interval: float = 1.0
    #: Refuse calls of accounts not in good standing (overdue, suspended, held) and
    #: pay-as-you-go calls their balance or monthly cap cannot pay (docs/standing.md).
    #: Needs an SQLite ledger. Off by default (it refuses calls); the example gateway's is on.
    enforce_balance: bool = False
    #: Seconds between refreshes of the cached balances, standing and caps.
    standing_refresh: float = 1.0
    #: Code and status of a refusal for arrears (VIAPI: InvalidApi.ForbiddenInvoke, 400).
    arrearage_code: str = "Account.Arrearage"
    arrearage_status: int = 403
    #: Code and status of a spend-guard or monthly-cap refusal.
    spend_cap_code: str = "Account.SpendCapExceeded"
    spend_cap_status: int = 403
    #: N: gateway processes on one ledger; each guards 1/N of a balance and of a cap.
    gateway_processes: int = 1

    def __post_init__(self) -> None:
        if self.mode not in ("strict", "batched"):
            raise ConfigError(f"mode: {self.mode!r} is not one of strict, batched")
        for name in (
            "flush_interval",
            "credential_refresh",
            "signature_window",
            "entitlement_refresh",
            "webhook_timeout",
            "webhook_poll_interval",
            "standing_refresh",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"{name}: must be a positive number of seconds")
        for name in (
            "max_body_bytes",
            "max_header_bytes",
            "max_header_count",
            "error_body_limit",
            "limiter_processes",
            "webhook_max_attempts",
            "gateway_processes",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}: must be a positive integer")
        if self.webhook_url is not None and not self.webhook_url.startswith(
            ("http://", "https://")
        ):
            raise ConfigError("webhook_url: must be an http(s) URL")
        if self.webhook_secret is not None:
            _check_webhook_secret(self.webhook_secret, "webhook_secret")
        for name in ("arrearage_status", "spend_cap_status"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 499:
                raise ConfigError(f"{name}: must be an HTTP client-error status (400-499)")
        for name in ("arrearage_code", "spend_cap_code"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigError(f"{name}: must be a non-empty error code")
        value = self.settle_interval
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError("settle_interval: must be zero (off) or a positive number of seconds")
        if self.limiter_failure_policy not in ("open", "closed", "local"):
            raise ConfigError(
                f"limiter_failure_policy: {self.limiter_failure_policy!r} is not one of "
                "open, closed, local"
            )
        if self.throttle_status not in (429, 400):
            raise ConfigError("throttle_status: must be 429 or 400")
        _check_upstream_qps(self.upstream_qps)
        if self.upstream_throttle_status not in (429, 400, 503):
            raise ConfigError("upstream_throttle_status: must be 429, 400 or 503")
        if not isinstance(self.upstream_throttle_code, str) or not self.upstream_throttle_code:
            raise ConfigError("upstream_throttle_code: must be a non-empty error code")
        for name in ("enforce_qps", "enforce_balance"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: must be true or false")
        if not self.limiter_url.startswith(("memory://", "redis://", "rediss://", "unix://")):
            raise ConfigError(f"limiter_url: {self.limiter_url!r} is not memory:// or redis://")
        if not self.ledger_url:
            raise ConfigError("ledger_url: must not be empty")
        if self.trusted_hop_secret is not None and len(self.trusted_hop_secret) < 16:
            raise ConfigError("trusted_hop_secret: use at least 16 characters")
        object.__setattr__(self, "chargeable_codes", frozenset(self.chargeable_codes))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any], *, where: str = "metering") -> MeteringConfig:
        """Build from a TOML table (``[metering]``); unknown keys are errors."""
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in doc.items():
            if key not in known:
                raise ConfigError(f"{where}.{key}: unknown setting")
            if key == "webhook_secret":  # files get copied, shown, committed
                raise ConfigError(
                    f"{where}.webhook_secret: never inline; set {ENV_PREFIX}WEBHOOK_SECRET "
                    "or webhook_secret_file"
                )
            values[key] = _coerce(key, value, where)
        try:
            return cls(**values)
        except TypeError as exc:  # a wrong type the checks above did not catch
            raise ConfigError(f"{where}: {exc}") from None

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
        """Overlay ``METERING_<SETTING>`` environment variables."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(self):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None:
                values[f.name] = _from_env(f.name, raw)
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


def _check_upstream_qps(spec: Any) -> None:
    # The limiter's UpstreamBudgets checks the same again; here so a bad file or variable
    # is a ConfigError naming the setting, without importing the limiter.
    if not isinstance(spec, Mapping):
        raise ConfigError("upstream_qps: must be a table of <category>[.<Action>] = QPS")
    for key, value in spec.items():
        category, dot, action = str(key).partition(".")
        if not category or (dot and not action) or "." in action:
            raise ConfigError(
                f"upstream_qps.{key}: write a category (facebody) or one API (facebody.DetectFace)"
            )
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"upstream_qps.{key}: must be a positive integer (QPS)")


def _coerce(key: str, value: Any, where: str) -> Any:
    if key == "upstream_qps":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.{key}: must be a table of <category>[.<Action>] = QPS")
        # An unquoted TOML key `facebody.DetectFace = 100` is a nested table: flatten it.
        flat: dict[str, Any] = {}
        for name, qps in value.items():
            if isinstance(qps, Mapping):
                flat.update({f"{name}.{action}": n for action, n in qps.items()})
            else:
                flat[name] = qps
        return flat
    if key == "chargeable_codes":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where}.{key}: must be a list of strings")
        return frozenset(value)
    if key == "category_overrides":
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}.{key}: must be a table of 'Action@Version' = 'category'")
        out: dict[tuple[str, str], str] = {}
        for pair, category in value.items():
            action, sep, version = str(pair).partition("@")
            if not sep or not action or not version or not isinstance(category, str):
                raise ConfigError(f"{where}.{key}.{pair}: write 'Action@Version' = 'category'")
            out[(action, version)] = category
        return out
    return value


def _from_env(name: str, raw: str) -> Any:
    if name in ("enforce_qps", "enforce_balance"):
        if raw.lower() not in ("1", "0", "true", "false", "yes", "no"):
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not true or false")
        return raw.lower() in ("1", "true", "yes")
    if name in (
        "flush_interval",
        "credential_refresh",
        "signature_window",
        "entitlement_refresh",
        "settle_interval",
        "webhook_timeout",
        "webhook_poll_interval",
        "standing_refresh",
    ):
        try:
            return float(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not a number") from None
    if name in (
        "max_body_bytes",
        "max_header_bytes",
        "max_header_count",
        "error_body_limit",
        "limiter_processes",
        "throttle_status",
        "upstream_throttle_status",
        "webhook_max_attempts",
        "gateway_processes",
        "arrearage_status",
        "spend_cap_status",
    ):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"{ENV_PREFIX}{name.upper()}: {raw!r} is not an integer") from None
    if name == "chargeable_codes":
        return frozenset(p.strip() for p in raw.split(",") if p.strip())
    if name == "upstream_qps":  # facebody=50,facebody.DetectFace=100
        out: dict[str, int] = {}
        for part in filter(None, (p.strip() for p in raw.split(","))):
            key, _, value = part.partition("=")
            if not value.strip().isdigit():
                raise ConfigError(f"{ENV_PREFIX}UPSTREAM_QPS: {part!r} is not <category>=<QPS>")
            out[key.strip()] = int(value)
        return out
    if name == "category_overrides":
        return _coerce(name, dict(p.split("=", 1) for p in raw.split(",") if "=" in p), "env")
    nullable = (
        "journal_path",
        "catalog_path",
        "trusted_hop_secret",
        "webhook_url",
        "webhook_secret",
        "webhook_secret_file",
    )
    return raw or None if name in nullable else raw
