"""The README's tenant examples run as written: the SDK's ``call_api`` block prints what its
comments say, and the curl block (headers signed by ``metering_middleware.tenant.sign``)
gets the tenant's balance from a real gateway."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from metering_middleware.tenant.sign import main as sign_main

from .support import TenantGateway, tenant_gateway

README = Path(__file__).resolve().parents[2] / "README.md"
KEY_IN_README = "LTAI5tAcmeTenantKey0001"


def _block(marker: str, language: str) -> str:
    text = README.read_text("utf-8")
    tag = f"<!-- {marker}: tests/tenant/test_readme_tenant.py runs this block -->"
    after = text[text.index(tag) + len(tag) :]
    found = re.match(rf"\s*```{language}\n(.*?)```", after, re.S)
    assert found, f"the {marker} marker must precede a {language} block"
    return found.group(1)


@pytest.fixture
async def gw(tmp_path: Path) -> AsyncIterator[TenantGateway]:
    async with tenant_gateway(tmp_path) as gateway:
        yield gateway


def _run(source: str) -> str:
    out = io.StringIO()
    namespace: dict[str, Any] = {}
    with contextlib.redirect_stdout(out):
        exec(compile(source, "README.md", "exec"), namespace)
    return out.getvalue()


async def test_the_sdk_example_prints_what_it_says(gw: TenantGateway) -> None:
    s = gw.seeded
    source = (
        _block("tenant-example", "python")
        .replace(KEY_IN_README, s.a.id)
        .replace("the tenant's own secret", s.a.secret)
        .replace("127.0.0.1:8080", gw.endpoint)
        .replace('"2026-12"', f'"{s.month}"')
    )
    printed = (await asyncio.to_thread(_run, source)).splitlines()
    promised = [line.rsplit("#", 1)[1].strip() for line in source.splitlines() if "print(" in line]
    assert printed == promised


async def test_the_curl_example_reads_the_balance(gw: TenantGateway, tmp_path: Path) -> None:
    s = gw.seeded
    script = (
        _block("tenant-curl", "sh")
        .replace(KEY_IN_README, s.a.id)
        .replace(
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET=...", f"ALIBABA_CLOUD_ACCESS_KEY_SECRET={s.a.secret}"
        )
        .replace("http://127.0.0.1:8080", gw.base)
        .replace("python -m", f"{sys.executable} -m")
    )
    process = await asyncio.create_subprocess_exec(
        "bash",
        "-euc",
        script,
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    answer = json.loads(out)
    assert (answer["Data"]["account"], answer["Data"]["balance"]) == ("acme", "97.50")
    signed = (tmp_path / "signed.txt").read_text()
    assert s.a.secret not in signed  # the file holds the signature, never the secret
    # The same headers again are a replay: refused.
    again = await asyncio.create_subprocess_exec(
        "curl",
        "-s",
        "-H",
        "@signed.txt",
        f"{gw.base}/tenant/v1/balance",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
    )
    replayed, _ = await again.communicate()
    assert json.loads(replayed)["Code"] == "SignatureNonceUsed"


def test_the_signer_wants_the_key_in_the_environment(capsys: pytest.CaptureFixture[str]) -> None:
    url = "http://127.0.0.1:8080/tenant/v1/balance"
    assert sign_main(["DescribeBalance", url], environ={}) == 1
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in capsys.readouterr().err
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIk", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "s3cr3t"}
    assert sign_main(["DescribeBalance", "ftp://x/"], environ=env) == 2
    assert sign_main(["DescribeBill", url, "--data", "{nope"], environ=env) == 2
    assert sign_main(["DescribeBalance", url], environ=env) == 0
    printed = capsys.readouterr().out
    assert "s3cr3t" not in printed
    assert "authorization: ACS3-HMAC-SHA256 Credential=LTAIk," in printed
    assert "host: 127.0.0.1:8080" in printed
