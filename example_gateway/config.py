"""The example gateway's configuration: a TOML file, then environment variables.

``[gateway]`` holds the proxy's settings, ``[metering]`` the meter's (see
``metering_middleware.MeteringConfig``). Environment variables override the
file: ``GATEWAY_<SETTING>`` and ``METERING_<SETTING>``. Everything is checked
at start; a bad value stops the gateway with one line naming it.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from metering_middleware._settings import (
    Check,
    Source,
    check_instance,
    env_names,
    from_env,
    from_table,
    non_negative,
    positive,
    reference,
    refuse_unknown_env,
    setting,
    starts_with,
    suggest,
)
from metering_middleware.admin.tokens import AdminTokens, TokenError
from metering_middleware.config import ENV_PREFIX, OTHER_ENV, ConfigError, MeteringConfig

__all__ = [
    "ADMIN_PREFIX",
    "GATEWAY_ENFORCE_BALANCE",
    "GATEWAY_SETTLE_INTERVAL",
    "AdminConfig",
    "AdminSettings",
    "GatewayConfig",
    "ResignConfig",
    "ResignSettings",
    "load_config",
    "settings_reference",
]

#: Seconds between the gateway's own settlement passes (``[metering] settle_interval``).
GATEWAY_SETTLE_INTERVAL = 60.0
#: Standing check, spend guard and caps (``[metering] enforce_balance``): on in the gateway.
GATEWAY_ENFORCE_BALANCE = True


@dataclass(frozen=True, slots=True)
class ResignConfig:
    """The operator's own AccessKey, to re-sign forwarded calls for the real VIAPI (V3)."""

    access_key_id: str
    secret: str = field(repr=False)


#: Where the admin API is mounted unless ``[admin] prefix`` says otherwise.
ADMIN_PREFIX = "/admin"
#: ``/tenant`` is the tenant view's mount: an admin API there would shadow it.
_OWN_ROUTES = ("/healthz", "/readyz", "/metrics", "/tenant")


@dataclass(frozen=True, slots=True)
class AdminConfig:
    """The admin API (``[admin]``): served under ``prefix``, unmetered, when tokens are set."""

    tokens: AdminTokens = field(repr=False)
    prefix: str = ADMIN_PREFIX

    def __post_init__(self) -> None:
        p = self.prefix
        if not p.startswith("/") or p.endswith("/") or "//" in p or not p.isprintable():
            raise ConfigError(
                f"admin.prefix: {p!r} must start with '/' and not end with one (e.g. /admin)"
            )
        if any(c in p for c in "?#{}% "):
            raise ConfigError(f"admin.prefix: {p!r} has characters a path prefix cannot have")
        if p in _OWN_ROUTES:
            raise ConfigError(f"admin.prefix: {p!r} is one of the gateway's own routes")


_SECONDS = positive("seconds")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = setting("127.0.0.1", doc="where it listens")
    port: int = setting(8080, check=Check("a TCP port", lambda v: 0 <= v <= 65535), doc="its port")
    upstream: str = setting(
        "http://127.0.0.1:9000",
        check=starts_with("an http(s) URL", "http://", "https://"),
        doc="where calls go: the mock (`metering-gateway mock`) or "
        "`https://facebody.cn-shanghai.aliyuncs.com`",
    )
    timeout: float = setting(
        30.0,
        check=_SECONDS,
        doc="upstream timeout; a timeout answers 504 `GatewayTimeout`, free",
    )
    connect_timeout: float = setting(5.0, check=_SECONDS, doc="upstream connect timeout")
    max_connections: int = setting(64, check=positive(), doc="the one shared client's pool bound")
    warm_connections: int = setting(
        4,
        check=non_negative("0 (off) or a positive integer"),
        doc="keep-alive connections to the upstream opened at start, before the first call "
        "(an unsigned `GET` of the upstream's base path, nothing billable), so the first "
        "calls after a start pay no connection set-up; `0` turns it off; an unreachable "
        "upstream does not stop the start",
    )
    transport: Literal["aiohttp", "httpx"] = setting(
        "aiohttp",
        doc="`aiohttp` (httpx API over aiohttp, measured faster) or `httpx`",
    )
    drain_seconds: float = setting(
        10.0,
        check=_SECONDS,
        doc="on shutdown, in-flight calls get this long, then the ledger is flushed",
    )
    tenant_qps: int = setting(
        5,
        check=non_negative("0 (off) or a positive integer"),
        doc="tenant-view calls per second per account under `/tenant/` "
        "([docs/tenant.md](docs/tenant.md)); `0` turns the view off",
    )
    resign: ResignConfig | None = None
    admin: AdminConfig | None = None

    def __post_init__(self) -> None:
        for name, value in check_instance(self, Source("file", "", "gateway")).items():
            object.__setattr__(self, name, value)


@dataclass(frozen=True, slots=True)
class ResignSettings:
    """``[gateway.resign]``: the operator's AccessKey for the real VIAPI (V3 re-signing)."""

    access_key_id: str | None = setting(
        None, doc="the operator's AccessKeyId (on when set, here or in the environment)"
    )
    secret_file: str | None = setting(None, doc="a file holding its secret")
    secret: str | None = setting(
        None, secret=True, in_file=False, doc="the secret itself: environment only"
    )


@dataclass(frozen=True, slots=True)
class AdminSettings:
    """``[admin]``: the admin API, on when tokens are configured."""

    prefix: str = setting(ADMIN_PREFIX, doc="where the admin API is mounted")
    tokens_file: str | None = setting(
        None, doc="a file of admin bearer tokens, one per line (several: rotation)"
    )
    tokens: str | None = setting(
        None,
        secret=True,
        in_file=False,
        doc="comma-separated admin bearer tokens: environment only",
    )


_PREFIX = "GATEWAY_"
_TABLES: dict[str, tuple[type, str]] = {
    # table in the file -> (its declaration, its variables' prefix)
    "gateway": (GatewayConfig, "GATEWAY_"),
    "gateway.resign": (ResignSettings, "GATEWAY_RESIGN_"),
    "admin": (AdminSettings, "GATEWAY_ADMIN_"),
}


def _layered(table: str, doc: Any, path: str, env: Mapping[str, str]) -> dict[str, Any]:
    """One table's settings: the file's values, then its variables over them."""
    cls, prefix = _TABLES[table]
    if doc is None:
        doc = {}
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: {table}: must be a table")
    values = from_table(cls, doc, Source("file", path, table), env_prefix=prefix)
    values.update(from_env(cls, env, prefix))
    return values


def _resign(values: Mapping[str, Any]) -> ResignConfig | None:
    key_id = values.get("access_key_id")
    if key_id is None and not values:
        return None
    if not key_id:
        raise ConfigError("gateway.resign.access_key_id: must be set")
    # The secret is never inline in the file: an environment variable or a file.
    secret = values.get("secret")
    if secret is None:
        path = values.get("secret_file")
        if path is None:
            raise ConfigError("gateway.resign: set secret_file or GATEWAY_RESIGN_SECRET")
        try:
            secret = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"gateway.resign.secret_file: {exc.strerror}: {path}") from None
    if not secret:
        raise ConfigError("gateway.resign: the secret is empty")
    return ResignConfig(key_id, secret)


def _admin(values: Mapping[str, Any]) -> AdminConfig | None:
    """``[admin]``: on when tokens are configured (GATEWAY_ADMIN_TOKENS or tokens_file)."""
    prefix = values.get("prefix", ADMIN_PREFIX)
    text = values.get("tokens")
    where = "GATEWAY_ADMIN_TOKENS"
    if text is None:
        path = values.get("tokens_file")
        if path is None:
            return None
        where = f"admin.tokens_file {path}"
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"admin.tokens_file: {exc.strerror}: {path}") from None
    try:
        tokens = AdminTokens.parse(text)
    except TokenError as exc:  # never the token itself, only which one and why
        raise ConfigError(f"{where}: {exc}") from None
    return AdminConfig(tokens, prefix)


#: Every variable the gateway and its meter read; any other GATEWAY_*/METERING_* is a typo.
def _known_env() -> set[str]:
    known = set(OTHER_ENV) | env_names(MeteringConfig, ENV_PREFIX)
    for cls, prefix in _TABLES.values():
        known |= env_names(cls, prefix)
    return known


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[GatewayConfig, MeteringConfig]:
    """The gateway's and the meter's settings: defaults, then the TOML file at ``path``,
    then ``GATEWAY_*``/``METERING_*`` environment variables (the later wins)."""
    env = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    shown = str(path) if path is not None else ""
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:  # its message names the line and column
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    sections = ("gateway", "metering", "admin")
    for name in doc:
        if name not in sections:
            raise ConfigError(
                f"config file {shown}: unknown section [{name}]{suggest(name, sections)}"
            )
    refuse_unknown_env(env, (_PREFIX, ENV_PREFIX), _known_env())
    gw_doc = doc.get("gateway", {})
    if not isinstance(gw_doc, Mapping):
        raise ConfigError(f"{shown}: gateway: must be a table")
    gw_doc = dict(gw_doc)
    resign = _resign(_layered("gateway.resign", gw_doc.pop("resign", None), shown, env))
    admin = _admin(_layered("admin", doc.get("admin"), shown, env))
    gateway = GatewayConfig(**_layered("gateway", gw_doc, shown, env), resign=resign, admin=admin)
    # The gateway settles its ledger itself and refuses calls nobody can pay for, unless
    # told otherwise (``settle_interval = 0``, ``enforce_balance = false``); the library's
    # defaults are off.
    metering = MeteringConfig.load(
        table=doc.get("metering", {}),
        file=shown,
        environ=env,
        defaults={
            "settle_interval": GATEWAY_SETTLE_INTERVAL,
            "enforce_balance": GATEWAY_ENFORCE_BALANCE,
        },
    )
    # A webhook URL without a usable secret (METERING_WEBHOOK_SECRET or
    # webhook_secret_file) stops the start here, with one line naming it.
    metering.webhook_signing_secret()
    return gateway, metering


def settings_reference() -> str:
    """The README's configuration reference, generated from the declarations."""
    return (
        "#### `[metering]` (`METERING_<SETTING>`)\n\n"
        + reference(MeteringConfig)
        + "\n#### `[gateway]` (`GATEWAY_<SETTING>`)\n\n"
        + reference(GatewayConfig, skip=("resign", "admin"))
        + "\n#### `[gateway.resign]` (`GATEWAY_RESIGN_<SETTING>`)\n\n"
        + reference(ResignSettings)
        + "\n#### `[admin]` (`GATEWAY_ADMIN_<SETTING>`)\n\n"
        + reference(AdminSettings)
    )
