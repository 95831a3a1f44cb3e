"""Settings are validated when built, with the setting named."""

from __future__ import annotations

from pathlib import Path

import pytest

from example_gateway.config import load_config
from metering_middleware.config import ConfigError, MeteringConfig


def test_defaults_are_valid() -> None:
    config = MeteringConfig()
    assert config.mode == "strict"
    assert "InvalidImage.NotFoundFace" in config.chargeable_codes


@pytest.mark.parametrize(
    ("doc", "name"),
    [
        ({"mode": "eventually"}, "mode"),
        ({"flush_interval": 0}, "flush_interval"),
        ({"max_body_bytes": -1}, "max_body_bytes"),
        ({"chargeable_codes": "InvalidImage.NotFoundFace"}, "chargeable_codes"),
        ({"category_overrides": {"GetAsyncJobResult": "ocr"}}, "category_overrides"),
        ({"trusted_hop_secret": "short"}, "trusted_hop_secret"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_settings_are_named(doc: dict[str, object], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        MeteringConfig.from_mapping(doc)


def test_environment_overrides() -> None:
    config = MeteringConfig().with_env(
        {
            "METERING_MODE": "batched",
            "METERING_FLUSH_INTERVAL": "0.5",
            "METERING_CHARGEABLE_CODES": "InvalidImage.NotFoundFace, Custom.Code",
            "METERING_CATEGORY_OVERRIDES": "GetAsyncJobResult@2019-12-30=ocr",
        }
    )
    assert config.mode == "batched" and config.flush_interval == 0.5
    assert config.chargeable_codes == {"InvalidImage.NotFoundFace", "Custom.Code"}
    assert config.category_overrides == {("GetAsyncJobResult", "2019-12-30"): "ocr"}
    with pytest.raises(ConfigError, match="METERING_FLUSH_INTERVAL"):
        MeteringConfig().with_env({"METERING_FLUSH_INTERVAL": "soon"})


def test_gateway_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    secret = tmp_path / "operator.secret"
    secret.write_text("operator-secret-value\n")
    path.write_text(
        "[gateway]\n"
        'upstream = "https://facebody.cn-shanghai.aliyuncs.com"\n'
        "port = 9090\n"
        "[gateway.resign]\n"
        'access_key_id = "LTAIoperator"\n'
        f'secret_file = "{secret}"\n'
        "[metering]\n"
        'mode = "batched"\n'
        "[metering.category_overrides]\n"
        '"GetAsyncJobResult@2019-12-30" = "imageseg"\n'
    )
    gateway, metering = load_config(path, {"GATEWAY_PORT": "9191"})
    assert gateway.port == 9191
    assert gateway.resign is not None and gateway.resign.secret == "operator-secret-value"
    assert "operator-secret-value" not in repr(gateway)
    assert metering.mode == "batched"
    assert metering.category_overrides == {("GetAsyncJobResult", "2019-12-30"): "imageseg"}


@pytest.mark.parametrize(
    ("text", "env", "name"),
    [
        ('[gateway]\nupstream = "ftp://x"\n', {}, "gateway.upstream"),
        ("[gateway]\nport = 70000\n", {}, "gateway.port"),
        ('[gateway]\ntransport = "curl"\n', {}, "gateway.transport"),
        ("[gateway]\nspeed = 1\n", {}, "gateway.speed"),
        ("[gatway]\n", {}, "unknown section"),
        ("[gateway\n", {}, "not valid TOML"),
        ("", {"GATEWAY_PORT": "eighty"}, "GATEWAY_PORT"),
        ('[gateway.resign]\naccess_key_id = "k"\n', {}, "secret_file"),
    ],
)
def test_bad_gateway_config(tmp_path: Path, text: str, env: dict[str, str], name: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=name):
        load_config(path, env)


def test_every_numeric_setting_reads_from_the_environment() -> None:
    """A setting added to the config but not to the environment reader would stay text."""
    from dataclasses import fields

    base = MeteringConfig()
    numeric = [
        f.name
        for f in fields(MeteringConfig)
        if isinstance(getattr(base, f.name), int | float)
        and not isinstance(getattr(base, f.name), bool)
    ]
    assert "max_header_bytes" in numeric and "flush_interval" in numeric
    for name in numeric:
        value = getattr(base, name)
        # Statuses have a valid range: another valid one instead of the double.
        statuses = {
            "throttle_status": 400,
            "upstream_throttle_status": 503,
            "arrearage_status": 400,
            "spend_cap_status": 402,
        }
        doubled = statuses.get(name, value * 2)
        config = base.with_env({f"METERING_{name.upper()}": str(doubled)})
        assert getattr(config, name) == doubled, name
