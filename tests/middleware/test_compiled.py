"""The opt-in compiled build (``python -m metering_middleware._build``, docs/performance.md).

A build records what it compiled; an extension module whose source changed since is
never imported (it would run the old code). Checked on a copy of the package with a
"compiled" module that is not a valid extension at all: loaded, it fails the import.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import metering_middleware
from metering_middleware._compiled import HOT_MODULES, compiled_modules

_PACKAGE = Path(metering_middleware.__file__).resolve().parent
_SUFFIX = importlib.machinery.EXTENSION_SUFFIXES[0]


def _copy(tmp_path: Path, digests: dict[str, str] | None) -> Path:
    root = tmp_path / "tree"
    shutil.copytree(
        _PACKAGE,
        root / "metering_middleware",
        ignore=shutil.ignore_patterns("*.so", "_hot.json", "__pycache__"),
    )
    # A file where the compiled middleware would be: garbage, so loading it fails loudly.
    (root / "metering_middleware" / f"middleware{_SUFFIX}").write_bytes(b"not an ELF file")
    if digests is not None:
        manifest = {"cache_tag": sys.implementation.cache_tag, "sources": digests}
        (root / "metering_middleware" / "_hot.json").write_text(json.dumps(manifest))
    return root


def _import(root: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    code = "import metering_middleware.middleware as m; print(m.__file__)"
    env = {k: v for k, v in os.environ.items() if k != "METERING_PURE_PYTHON"}
    env.update(PYTHONPATH=str(root), **environ)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root
    )


def _digests(root: Path) -> dict[str, str]:
    return {
        m: hashlib.sha256(root.joinpath(*m.split(".")).with_suffix(".py").read_bytes()).hexdigest()
        for m in HOT_MODULES
    }


def test_a_build_whose_sources_changed_is_not_imported(tmp_path: Path) -> None:
    root = _copy(tmp_path, None)
    digests = _digests(root)
    digests["metering_middleware.middleware"] = "0" * 64  # the source changed since
    (root / "metering_middleware" / "_hot.json").write_text(
        json.dumps({"cache_tag": sys.implementation.cache_tag, "sources": digests})
    )
    # And one a build of another list left behind (an older checkout's): also garbage.
    (root / "metering_middleware" / f"durable_nonces{_SUFFIX}").write_bytes(b"not an ELF")
    done = _import(root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("middleware.py")  # the source, not the extension
    assert "older than their sources" in done.stderr


def test_a_fresh_build_is_imported(tmp_path: Path) -> None:
    # The same tree with a manifest that matches: the extension is what gets imported
    # (here it is garbage, so the import fails: the check above is not vacuous).
    root = _copy(tmp_path, None)
    (root / "metering_middleware" / "_hot.json").write_text(
        json.dumps({"cache_tag": sys.implementation.cache_tag, "sources": _digests(root)})
    )
    done = _import(root)
    assert done.returncode != 0
    assert "ImportError" in done.stderr


def test_pure_python_on_demand_loads_the_sources_of_a_fresh_build(tmp_path: Path) -> None:
    root = _copy(tmp_path, None)
    (root / "metering_middleware" / "_hot.json").write_text(
        json.dumps({"cache_tag": sys.implementation.cache_tag, "sources": _digests(root)})
    )
    done = _import(root, METERING_PURE_PYTHON="1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("middleware.py")
    assert "older than" not in done.stderr  # asked for, so no warning


def test_a_build_for_another_interpreter_is_not_imported(tmp_path: Path) -> None:
    root = _copy(tmp_path, None)
    (root / "metering_middleware" / "_hot.json").write_text(
        json.dumps({"cache_tag": "cpython-00", "sources": _digests(root)})
    )
    done = _import(root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("middleware.py")


@pytest.mark.skipif(
    os.environ.get("METERING_EXPECT_COMPILED") != "1",
    reason="the compiled run of .ci/run sets METERING_EXPECT_COMPILED=1",
)
def test_the_compiled_run_runs_compiled_modules() -> None:
    # Else the "compiled" CI step would quietly test the Python source again.
    assert compiled_modules() == list(HOT_MODULES)
