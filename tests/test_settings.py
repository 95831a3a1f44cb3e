"""Settings declared once: every source reads every setting, errors name setting and source,
unknown names are refused with a suggestion, and the README's reference is the declaration."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from example_gateway.config import (
    AdminSettings,
    GatewayConfig,
    ResignSettings,
    load_config,
    settings_reference,
)
from metering_middleware import MeteringMiddleware
from metering_middleware._settings import _Bool, _Choice, _Float, _Int, _Optional, _StrSet, declared
from metering_middleware.config import ConfigError, MeteringConfig

README = Path(__file__).resolve().parent.parent / "README.md"

#: Valid non-default values where a setting's check narrows its type.
_SAMPLES: dict[str, tuple[Any, str]] = {
    # name: (value as Python/TOML, the same as environment text)
    "ledger_url": ("sqlite:///other.sqlite", "sqlite:///other.sqlite"),
    "limiter_url": ("redis://127.0.0.1:6390/2", "redis://127.0.0.1:6390/2"),
    "throttle_status": (400, "400"),
    "upstream_throttle_status": (503, "503"),
    "upstream_qps": (
        {"facebody": 50, "facebody.DetectFace": 9},
        "facebody=50,facebody.DetectFace=9",
    ),
    "arrearage_status": (400, "400"),
    "spend_cap_status": (402, "402"),
    "webhook_url": ("https://hooks.example/x", "https://hooks.example/x"),
    "trusted_hop_secret": ("s" * 20, "s" * 20),
    "webhook_secret": ("w" * 20, "w" * 20),
    "category_overrides": (
        {"GetAsyncJobResult@2019-12-30": "ocr"},
        "GetAsyncJobResult@2019-12-30=ocr",
    ),
    "port": (9191, "9191"),
    "upstream": (
        "https://facebody.cn-shanghai.aliyuncs.com",
        "https://facebody.cn-shanghai.aliyuncs.com",
    ),
}


def _sample(name: str, kind: Any, default: Any) -> tuple[Any, str]:
    if name in _SAMPLES:
        return _SAMPLES[name]
    inner = kind.inner if isinstance(kind, _Optional) else kind
    if isinstance(inner, _Bool):
        return (not default, "true" if not default else "false")
    if isinstance(inner, _Int):
        return (default * 2 + 1, str(default * 2 + 1))
    if isinstance(inner, _Float):
        return (default * 2 + 0.5, str(default * 2 + 0.5))
    if isinstance(inner, _Choice):
        other = next(c for c in inner.choices if c != default)
        return (other, other)
    if isinstance(inner, _StrSet):
        return (["A.Code", "B.Code"], "A.Code, B.Code")
    return (f"/var/lib/{name}", f"/var/lib/{name}")


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f'"{k}" = {_toml(v)}' for k, v in value.items()) + " }"
    return f'"{value}"'


def test_every_meter_setting_reads_alike_from_every_source(tmp_path: Path) -> None:
    """A setting declared is a setting read: from the file, the environment, an argument."""
    settings = declared(MeteringConfig)
    assert "flush_interval" in settings and "gateway_processes" in settings
    assert set(settings) == {f.name for f in fields(MeteringConfig)}, "every field is declared"
    for name, d in settings.items():
        value, text = _sample(name, d.kind, d.default)
        from_env = MeteringConfig.load(environ={f"METERING_{name.upper()}": text})
        from_arg = MeteringConfig.load({name: d.kind.value(value)}, environ={})
        assert getattr(from_env, name) == getattr(from_arg, name) != d.default, name
        if d.in_file:
            table = {name: value}
            from_file = MeteringConfig.load(table=table, file="g.toml", environ={})
            assert getattr(from_file, name) == getattr(from_env, name), name


def test_every_gateway_setting_reads_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    for name, d in declared(GatewayConfig).items():
        value, text = _sample(name, d.kind, d.default)
        path.write_text(f"[gateway]\n{name} = {_toml(value)}\n")
        from_file, _ = load_config(path, {})
        from_env, _ = load_config(None, {f"GATEWAY_{name.upper()}": text})
        assert getattr(from_file, name) == getattr(from_env, name) != d.default, name


def test_precedence_defaults_file_environment_arguments() -> None:
    table = {"flush_interval": 0.2, "mode": "batched", "max_body_bytes": 1000}
    env = {"METERING_FLUSH_INTERVAL": "0.3", "METERING_MAX_BODY_BYTES": "2000"}
    config = MeteringConfig.load({"max_body_bytes": 3000}, table=table, environ=env)
    assert config.mode == "batched"  # the file over the default
    assert config.flush_interval == 0.3  # the environment over the file
    assert config.max_body_bytes == 3000  # an argument over the environment
    assert config.error_body_limit == 64 * 1024  # the default where nobody says


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: MeteringConfig(flush_interval="soon"),  # type: ignore[arg-type]
            "argument flush_interval: must be a positive number of seconds, not 'soon'",
        ),
        (
            lambda: MeteringConfig.load(table={"max_body_bytes": 1.5}, file="g.toml", environ={}),
            "g.toml: metering.max_body_bytes: must be a positive integer, not 1.5",
        ),
        (
            lambda: MeteringConfig.load(environ={"METERING_ENFORCE_QPS": "sometimes"}),
            "environment variable METERING_ENFORCE_QPS: must be true or false, not 'sometimes'",
        ),
        (
            lambda: MeteringConfig.load(environ={"METERING_MODE": "eventually"}),
            "environment variable METERING_MODE: must be one of strict, batched, not 'eventually'",
        ),
        (
            lambda: MeteringConfig.load(environ={"METERING_FLUSH_INTERVAL": "nan"}),
            "environment variable METERING_FLUSH_INTERVAL: must be a positive number of seconds",
        ),
        (
            lambda: MeteringConfig.load({"flush_intervall": 1}, environ={}),
            "argument flush_intervall: unknown setting (did you mean flush_interval?)",
        ),
        (
            lambda: MeteringMiddleware(lambda *a: None, ledger_uri="memory://"),  # type: ignore[arg-type]
            "argument ledger_uri: unknown setting (did you mean ledger_url?)",
        ),
        (
            lambda: MeteringConfig.load(environ={"METERING_LEDGER_URI": "memory://"}),
            "environment variable METERING_LEDGER_URI: unknown setting "
            "(did you mean METERING_LEDGER_URL?)",
        ),
        (
            lambda: MeteringConfig.load(table={"colour": "blue"}, file="g.toml", environ={}),
            "g.toml: metering.colour: unknown setting",
        ),
    ],
)
def test_a_bad_value_names_setting_source_and_expectation(make: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        make()
    assert str(err.value) == message or str(err.value).startswith(message)
    assert "\n" not in str(err.value)


def test_secrets_are_never_shown_in_a_message() -> None:
    with pytest.raises(ConfigError) as err:
        MeteringConfig.load(environ={"METERING_TRUSTED_HOP_SECRET": "tooshort-9"})
    assert "METERING_TRUSTED_HOP_SECRET" in str(err.value)
    assert "tooshort-9" not in str(err.value) and "not shown" in str(err.value)
    with pytest.raises(ConfigError, match="never inline"):
        MeteringConfig.load(table={"trusted_hop_secret": "x" * 20, "webhook_secret": "y" * 20})


def test_unknown_gateway_variables_and_sections(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"GATEWAY_PROT: unknown setting \(did you mean GATEWAY_PORT\?\)"
    ):
        load_config(None, {"GATEWAY_PROT": "80"})
    with pytest.raises(ConfigError, match="GATEWAY_RESIGN_SECRETS: unknown setting"):
        load_config(None, {"GATEWAY_RESIGN_SECRETS": "x"})
    path = tmp_path / "g.toml"
    path.write_text("[gateways]\nport = 1\n")
    with pytest.raises(
        ConfigError, match=r"unknown section \[gateways\] \(did you mean gateway\?\)"
    ):
        load_config(path, {})
    # Variables the gateway does read are not typos, whatever table they belong to.
    gateway, metering = load_config(
        None,
        {
            "GATEWAY_ADMIN_PREFIX": "/ops",
            "GATEWAY_ADMIN_TOKENS": "t" * 40,
            "METERING_SECRET_KEY": "unused-here",
            "METERING_MODE": "batched",
        },
    )
    assert gateway.admin is not None and gateway.admin.prefix == "/ops"
    assert metering.mode == "batched"


def test_the_gateway_declarations_cover_every_table() -> None:
    assert set(declared(ResignSettings)) == {"access_key_id", "secret_file", "secret"}
    assert set(declared(AdminSettings)) == {"prefix", "tokens_file", "tokens"}
    assert set(declared(GatewayConfig)) == {f.name for f in fields(GatewayConfig)} - {
        "resign",
        "admin",
    }


def test_the_readme_reference_is_the_declaration() -> None:
    text = README.read_text("utf-8")
    found = re.search(r"<!-- settings:begin -->\n(.*?)<!-- settings:end -->", text, re.S)
    assert found, "README.md lost its generated settings block"
    assert found.group(1) == settings_reference(), (
        "README.md's configuration reference differs from the declarations: regenerate it "
        '(python -c "from example_gateway.config import settings_reference as r; print(r())")'
    )


def _readme_errors() -> list[str]:
    text = README.read_text("utf-8")
    block = text.split("## Configuration reference", 1)[1].split("```text\n", 1)[1]
    return block.split("```", 1)[0].splitlines()


@pytest.mark.parametrize(
    ("toml", "env"),
    [
        ("", {"METERING_FLUSH_INTERVAL": "soon"}),
        ("[metering]\nflush_intervall = 1\n", {}),
        ('[metering]\nmode = "strict"\nflush interval = 1\n', {}),
    ],
)
def test_a_bad_setting_is_one_line_exit_2_and_nothing_started(
    tmp_path: Path, toml: str, env: dict[str, str]
) -> None:
    """The README's sample lines are what the gateway really prints; no ledger is made."""
    (tmp_path / "gateway.toml").write_text(toml)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("METERING_", "GATEWAY_"))}
    args = [sys.executable, "-m", "example_gateway", "serve"]
    if toml:
        args += ["--config", "gateway.toml"]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**clean, **env}
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    line = result.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line in _readme_errors()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.toml"], "nothing started"
