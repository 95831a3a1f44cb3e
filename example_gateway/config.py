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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from metering_middleware.admin.tokens import AdminTokens, TokenError
from metering_middleware.config import ConfigError, MeteringConfig

__all__ = [
    "ADMIN_PREFIX",
    "GATEWAY_ENFORCE_BALANCE",
    "GATEWAY_RETENTION_INTERVAL",
    "GATEWAY_SETTLE_INTERVAL",
    "AdminConfig",
    "GatewayConfig",
    "ResignConfig",
    "load_config",
]

#: Seconds between the gateway's own settlement passes (``[metering] settle_interval``).
GATEWAY_SETTLE_INTERVAL = 60.0
#: Standing check, spend guard and caps (``[metering] enforce_balance``): on in the gateway.
GATEWAY_ENFORCE_BALANCE = True
#: Seconds between the gateway's retention passes (``[metering] retention_interval``):
#: expired nonces go; counters only with ``counter_retention_days`` (docs/operations.md).
GATEWAY_RETENTION_INTERVAL = 3600.0


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


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    #: Where calls go: a mock (demo) or ``https://facebody.cn-shanghai.aliyuncs.com``.
    upstream: str = "http://127.0.0.1:9000"
    timeout: float = 30.0
    connect_timeout: float = 5.0
    max_connections: int = 64
    #: Keep-alive connections to the upstream opened at start, before the first call
    #: (0: off); the first calls after a start then pay no connection set-up.
    warm_connections: int = 4
    #: httpx on an aiohttp transport (measured faster here) or httpx's own pool.
    transport: Literal["aiohttp", "httpx"] = "aiohttp"
    #: Seconds in-flight calls get to finish on shutdown before the ledger is flushed.
    drain_seconds: float = 10.0
    resign: ResignConfig | None = None
    admin: AdminConfig | None = None
    #: Tenant-view calls per second per account under ``/tenant/`` (docs/tenant.md); 0: off.
    tenant_qps: int = 5

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ConfigError(f"gateway.upstream: {self.upstream!r} must be an http(s) URL")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"gateway.port: {self.port} is not a TCP port")
        for name in ("timeout", "connect_timeout", "drain_seconds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise ConfigError(f"gateway.{name}: must be a positive number of seconds")
        if (
            isinstance(self.max_connections, bool)
            or not isinstance(self.max_connections, int)
            or self.max_connections <= 0
        ):
            raise ConfigError("gateway.max_connections: must be a positive integer")
        if (
            isinstance(self.tenant_qps, bool)
            or not isinstance(self.tenant_qps, int)
            or self.tenant_qps < 0
        ):
            raise ConfigError("gateway.tenant_qps: must be 0 (off) or a positive integer")
        if (
            isinstance(self.warm_connections, bool)
            or not isinstance(self.warm_connections, int)
            or self.warm_connections < 0
        ):
            raise ConfigError("gateway.warm_connections: must be 0 (off) or a positive integer")
        if self.transport not in ("aiohttp", "httpx"):
            raise ConfigError(f"gateway.transport: {self.transport!r} is not aiohttp or httpx")


def _resign(doc: Any, env: Mapping[str, str]) -> ResignConfig | None:
    if doc is None and "GATEWAY_RESIGN_ACCESS_KEY_ID" not in env:
        return None
    doc = dict(doc or {})
    key_id = env.get("GATEWAY_RESIGN_ACCESS_KEY_ID", doc.get("access_key_id"))
    if not isinstance(key_id, str) or not key_id:
        raise ConfigError("gateway.resign.access_key_id: must be set")
    # The secret is never inline in the file: an environment variable or a file.
    secret = env.get("GATEWAY_RESIGN_SECRET")
    if secret is None:
        path = doc.get("secret_file")
        if not isinstance(path, str):
            raise ConfigError("gateway.resign: set secret_file or GATEWAY_RESIGN_SECRET")
        try:
            secret = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"gateway.resign.secret_file: {exc.strerror}: {path}") from None
    if not secret:
        raise ConfigError("gateway.resign: the secret is empty")
    return ResignConfig(key_id, secret)


def _admin(doc: Any, env: Mapping[str, str]) -> AdminConfig | None:
    """``[admin]``: on when tokens are configured (GATEWAY_ADMIN_TOKENS or tokens_file)."""
    doc = dict(doc or {})
    unknown = set(doc) - {"prefix", "tokens_file"}
    if "tokens" in unknown:
        raise ConfigError(
            "admin.tokens: tokens are never inline in the file: set tokens_file or "
            "GATEWAY_ADMIN_TOKENS"
        )
    if unknown:
        raise ConfigError(f"admin.{sorted(unknown)[0]}: unknown setting")
    prefix = env.get("GATEWAY_ADMIN_PREFIX", doc.get("prefix", ADMIN_PREFIX))
    if not isinstance(prefix, str):
        raise ConfigError("admin.prefix: must be a path such as /admin")
    text = env.get("GATEWAY_ADMIN_TOKENS")
    where = "GATEWAY_ADMIN_TOKENS"
    if text is None:
        path = doc.get("tokens_file")
        if path is None:
            return None
        if not isinstance(path, str):
            raise ConfigError("admin.tokens_file: must be a file path")
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


def load_config(
    path: str | Path | None = None, environ: Mapping[str, str] | None = None
) -> tuple[GatewayConfig, MeteringConfig]:
    env = os.environ if environ is None else environ
    doc: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                doc = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None
    unknown = set(doc) - {"gateway", "metering", "admin"}
    if unknown:
        raise ConfigError(f"config file: unknown section(s) {', '.join(sorted(unknown))}")
    gw_doc = dict(doc.get("gateway", {}))
    resign = _resign(gw_doc.pop("resign", None), env)
    admin = _admin(doc.get("admin"), env)
    known = {f.name for f in fields(GatewayConfig)} - {"resign", "admin"}
    for key in gw_doc:
        if key not in known:
            raise ConfigError(f"gateway.{key}: unknown setting")
    for name in known:
        raw = env.get(f"GATEWAY_{name.upper()}")
        if raw is None:
            continue
        kind = type(getattr(GatewayConfig(), name))
        try:
            gw_doc[name] = kind(raw)
        except ValueError:
            raise ConfigError(f"GATEWAY_{name.upper()}: {raw!r} is not a {kind.__name__}") from None
    try:
        gateway = replace(GatewayConfig(), **gw_doc, resign=resign, admin=admin)
    except TypeError as exc:
        raise ConfigError(f"gateway: {exc}") from None
    metering_doc = dict(doc.get("metering", {}))
    # The gateway settles its ledger itself unless told otherwise (0 turns it off).
    metering_doc.setdefault("settle_interval", GATEWAY_SETTLE_INTERVAL)
    # A gateway that resells calls refuses those nobody can pay for (METERING_ENFORCE_BALANCE
    # or ``enforce_balance = false`` turns it off); the library's default is off.
    metering_doc.setdefault("enforce_balance", GATEWAY_ENFORCE_BALANCE)
    metering_doc.setdefault("retention_interval", GATEWAY_RETENTION_INTERVAL)
    metering = MeteringConfig.from_mapping(metering_doc).with_env(env)
    # A webhook URL without a usable secret (METERING_WEBHOOK_SECRET or
    # webhook_secret_file) stops the start here, with one line naming it.
    metering.webhook_signing_secret()
    return gateway, metering
