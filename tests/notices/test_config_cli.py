"""Webhook settings (the secret only from the environment or a file, never shown) and
``metering notices`` / ``metering settle`` from the command line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from example_gateway.config import load_config
from metering_middleware import ConfigError, MeteringConfig, MeteringRuntime
from metering_middleware.cli import main
from metering_middleware.ledger import SqliteStore
from metering_middleware.ledger.migrate import connect_existing
from metering_middleware.notices import Notice, NoticeKind, record_notice
from metering_middleware.rating import SqliteRatingStore
from tests.rating.helpers import calls_between, plan

from .support import CATALOG
from .test_webhooks import SECRET, START, ledger_with_notice

URL = "https://hooks.example/notices"


def test_the_secret_comes_from_the_environment_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="webhook_secret: never inline"):
        MeteringConfig.from_mapping({"webhook_url": URL, "webhook_secret": SECRET})
    base = MeteringConfig.from_mapping({"webhook_url": URL})
    with pytest.raises(ConfigError, match="set METERING_WEBHOOK_SECRET or webhook_secret_file"):
        base.webhook_signing_secret()
    env = base.with_env({"METERING_WEBHOOK_SECRET": SECRET, "METERING_WEBHOOK_TIMEOUT": "3"})
    assert env.webhook_signing_secret() == SECRET and env.webhook_timeout == 3.0
    assert SECRET not in repr(env) and SECRET[6:] not in repr(env)
    secret_file = tmp_path / "hook.secret"
    secret_file.write_text(SECRET + "\n")
    from_file = MeteringConfig.from_mapping(
        {"webhook_url": URL, "webhook_secret_file": str(secret_file)}
    )
    assert from_file.webhook_signing_secret() == SECRET
    missing = MeteringConfig(webhook_url=URL, webhook_secret_file=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="webhook_secret_file: No such file"):
        missing.webhook_signing_secret()


def test_bad_webhook_settings_are_refused_without_echoing_the_secret(tmp_path: Path) -> None:
    short = "tooshort-secret"
    with pytest.raises(ConfigError, match="at least 16 characters") as err:
        MeteringConfig(webhook_url=URL, webhook_secret=short)
    assert short not in str(err.value)
    with pytest.raises(ConfigError, match="base64"):
        MeteringConfig(webhook_url=URL, webhook_secret="whsec_***not base64***")
    with pytest.raises(ConfigError, match="webhook_url: must be an http"):
        MeteringConfig(webhook_url="ftp://x")
    with pytest.raises(ConfigError, match="webhook_max_attempts"):
        MeteringConfig(webhook_max_attempts=0)
    with pytest.raises(ConfigError, match="METERING_WEBHOOK_MAX_ATTEMPTS"):
        MeteringConfig().with_env({"METERING_WEBHOOK_MAX_ATTEMPTS": "many"})
    with pytest.raises(ConfigError, match="notices live in an SQLite ledger"):
        MeteringRuntime(MeteringConfig(ledger_url="memory://", webhook_url=URL).with_env(
            {"METERING_WEBHOOK_SECRET": SECRET}
        ))  # fmt: skip


def test_the_example_gateway_reads_the_webhook_from_its_file_and_environment(
    tmp_path: Path,
) -> None:
    toml = tmp_path / "gateway.toml"
    toml.write_text(f'[metering]\nwebhook_url = "{URL}"\nwebhook_max_attempts = 4\n')
    _, metering = load_config(toml, {"METERING_WEBHOOK_SECRET": SECRET})
    assert metering.webhook_url == URL and metering.webhook_max_attempts == 4
    assert metering.webhook_signing_secret() == SECRET
    with pytest.raises(ConfigError, match="set METERING_WEBHOOK_SECRET"):
        load_config(toml, {})  # no secret: refused at load, not at the first notice
    toml.write_text(f'[metering]\nwebhook_url = "{URL}"\nwebhook_secret = "{SECRET}"\n')
    with pytest.raises(ConfigError, match="never inline") as err:
        load_config(toml, {})
    assert SECRET not in str(err.value)


def _more_notices(path: Path) -> None:
    conn = connect_existing(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for n in (
            Notice(NoticeKind.PLAN_EXPIRING, "globex", "rp-9", START + timedelta(days=1), {}),
            Notice(NoticeKind.CAP_REACHED, "acct", "2026-03", START + timedelta(days=2), {}),
        ):
            record_notice(conn, n, n.at)
        conn.execute("UPDATE notice_outbox SET delivered_at = '2026-03-04T00:00:00.000000Z'"
                     " WHERE notice_id LIKE 'account.cap_reached:%'")  # fmt: skip
        conn.execute("COMMIT")
    finally:
        conn.close()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_metering_notices_lists_and_filters(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERING_WEBHOOK_SECRET", SECRET)  # as on a gateway's host
    monkeypatch.setenv("METERING_WEBHOOK_URL", URL)
    path = tmp_path / "l.db"
    ledger_with_notice(path)
    _more_notices(path)
    db = ["--db", f"sqlite:///{path}"]
    code, out, err = run(capsys, *db, "--format", "json", "--tz", "UTC", "notices")
    assert code == 0 and err == ""
    rows = json.loads(out)
    assert [r["kind"] for r in rows] == ["balance.low", "plan.expiring", "account.cap_reached"]
    assert rows[0] == {
        "id": "balance.low:acct:2026-03-02",
        "kind": "balance.low",
        "account": "acct",
        "subject": "2026-03-02",
        "at": "2026-03-02T06:00:00+00:00",
        "data": {"balance": "9.5", "threshold": "10"},
        "delivery": "pending",
        "attempts": 0,
        "next_attempt": "2026-03-02T06:00:00+00:00",
        "last_error": None,
        "delivered_at": None,
    }
    assert rows[2]["delivery"] == "delivered" and rows[2]["next_attempt"] is None
    for args, expected in (
        (["--account", "acct"], ["balance.low", "account.cap_reached"]),
        (["--kind", "plan.expiring"], ["plan.expiring"]),
        (["--pending"], ["balance.low", "plan.expiring"]),
        (["--since", "2026-03-03T00:00:00+00:00"], ["plan.expiring", "account.cap_reached"]),
        (["--account", "acct", "--pending"], ["balance.low"]),
    ):
        code, out, _ = run(capsys, *db, "--format", "json", "notices", *args)
        assert code == 0 and [r["kind"] for r in json.loads(out)] == expected, args
    code, out, _ = run(capsys, *db, "--format", "csv", "notices", "--account", "globex")
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["id"] == "plan.expiring:globex:rp-9" and row["data"] == "{}"
    code, out, err = run(capsys, *db, "notices")
    assert code == 0 and out.splitlines()[0].split()[:3] == ["id", "kind", "account"]
    assert SECRET not in out + err and SECRET[6:] not in out + err
    assert "balance.low:acct:2026-03-02" in out and '{"balance":"9.5","threshold":"10"}' in out


def test_metering_notices_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "l.db"
    ledger_with_notice(path)
    with pytest.raises(SystemExit) as exit_:
        main(["--db", f"sqlite:///{path}", "notices", "--kind", "plan.bogus"])
    assert exit_.value.code == 2 and "invalid choice" in capsys.readouterr().err
    code, _, err = run(capsys, "--db", "memory://", "notices")
    assert code == 1 and err == "metering: notices live in an SQLite ledger (sqlite:///path)\n"
    with pytest.raises(SystemExit) as exit_:
        main(["--db", f"sqlite:///{path}", "notices", "--since", "soon"])
    assert exit_.value.code == 2 and "--since: 'soon' is not an ISO" in capsys.readouterr().err


def test_metering_settle_records_the_notices_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "l.db"
    now = datetime.now(UTC).replace(microsecond=0)
    bought = now - timedelta(hours=3)

    async def fill() -> None:
        async with SqliteRatingStore(path) as rating:
            the_plan = plan("rp-1", "single", ["ocr"], 100, bought, bought + timedelta(days=300))
            await rating.add_plan(the_plan, bought)
        async with SqliteStore(path) as ledger:
            start = now - timedelta(hours=2)
            await ledger.write(calls_between(CATALOG, 6, start, timedelta(seconds=1)), [])

    asyncio.run(fill())
    caplog.set_level(logging.INFO, logger="metering_middleware.notices")
    db = ["--db", f"sqlite:///{path}"]
    code, _, err = run(capsys, *db, "settle")
    assert code == 0 and "recorded 1 notice(s)" in err
    # Settlement's own standing notice (the plan's price put the balance below zero) and
    # the detector's: each one structured line on the notices logger.
    logged = [r.getMessage() for r in caplog.records if r.name == "metering_middleware.notices"]
    assert len(logged) == 2 and logged[0].startswith("notice id=account.overdue:acct:")
    assert logged[1].startswith("notice id=plan.points_low:acct:rp-1 kind=plan.points_low ")
    code, _, err = run(capsys, *db, "settle")
    assert code == 0 and "notice" not in err
    code, out, _ = run(capsys, *db, "--format", "json", "notices")
    ids = [r["id"] for r in json.loads(out)]
    assert len(ids) == 2 and ids[1] == "plan.points_low:acct:rp-1"
    assert len([r for r in caplog.records if r.name == "metering_middleware.notices"]) == 2
