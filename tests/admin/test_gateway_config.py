"""``[admin]`` in the gateway's configuration: tokens from GATEWAY_ADMIN_TOKENS or a file
(never inline), on when tokens are set, a bad token stops the start with one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from example_gateway.config import load_config
from metering_middleware.config import ConfigError

from .conftest import OLD_TOKEN, TOKEN, TOKEN_2


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_tokens_from_the_environment(tmp_path: Path) -> None:
    gateway, _ = load_config(None, {"GATEWAY_ADMIN_TOKENS": f"{TOKEN}, {TOKEN_2}"})
    assert gateway.admin is not None
    assert gateway.admin.prefix == "/admin" and len(gateway.admin.tokens) == 2
    assert gateway.admin.tokens.matches(TOKEN_2) and not gateway.admin.tokens.matches(OLD_TOKEN)
    assert TOKEN not in repr(gateway)


def test_tokens_from_a_file_and_a_prefix(tmp_path: Path) -> None:
    tokens = tmp_path / "admin-tokens"
    tokens.write_text(f"# rotated 2026-03\n{TOKEN}\n\n{TOKEN_2}\n")
    config = _write(tmp_path, f'[admin]\nprefix = "/ops"\ntokens_file = "{tokens}"\n')
    gateway, _ = load_config(config, {})
    assert gateway.admin is not None and gateway.admin.prefix == "/ops"
    assert len(gateway.admin.tokens) == 2
    # The environment wins over the file (as for every setting).
    gateway, _ = load_config(config, {"GATEWAY_ADMIN_TOKENS": TOKEN})
    assert gateway.admin is not None and len(gateway.admin.tokens) == 1


def test_no_tokens_no_admin_api(tmp_path: Path) -> None:
    assert load_config(None, {})[0].admin is None
    assert load_config(_write(tmp_path, '[admin]\nprefix = "/ops"\n'), {})[0].admin is None


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (f'[admin]\ntokens = "{TOKEN}"\n', {}, "admin.tokens: never inline in a file"),
        ("[admin]\ntoken_file = 'x'\n", {}, "admin.token_file: unknown setting"),
        ("[admin]\ntokens_file = '/nonexistent/tokens'\n", {}, "admin.tokens_file: No such file"),
        ("", {"GATEWAY_ADMIN_TOKENS": "short"}, "admin token #1 has 5 characters"),
        ("", {"GATEWAY_ADMIN_TOKENS": " , "}, "no admin token configured"),
        ("[admin]\nprefix = 'admin'\n", {"GATEWAY_ADMIN_TOKENS": TOKEN}, "admin.prefix"),
        ("[admin]\nprefix = '/admin/'\n", {"GATEWAY_ADMIN_TOKENS": TOKEN}, "admin.prefix"),
        ("[admin]\nprefix = '/metrics'\n", {"GATEWAY_ADMIN_TOKENS": TOKEN}, "own routes"),
        ("[admin]\nprefix = '/tenant'\n", {"GATEWAY_ADMIN_TOKENS": TOKEN}, "own routes"),
        ("[admin]\nprefix = 7\n", {"GATEWAY_ADMIN_TOKENS": TOKEN}, "admin.prefix"),
    ],
)
def test_bad_admin_settings(tmp_path: Path, toml: str, env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, toml), env)
    assert message in str(err.value)
    assert "\n" not in str(err.value) and TOKEN not in str(err.value)


def test_a_bad_token_stops_the_start_with_one_line(tmp_path: Path) -> None:
    config = _write(tmp_path, "")
    env = {**os.environ, "GATEWAY_ADMIN_TOKENS": f"{TOKEN},tooshort-secret"}
    result = subprocess.run(
        [sys.executable, "-m", "example_gateway", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "metering-gateway: GATEWAY_ADMIN_TOKENS: admin token #2 has 15 characters; "
        "at least 32 are needed"
    )
    assert "tooshort-secret" not in result.stderr and TOKEN not in result.stderr
