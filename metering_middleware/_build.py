"""Opt-in compiled hot modules (mypyc): ``python -m metering_middleware._build``.

The request path's modules are plain, strictly typed Python; mypyc (from mypy) compiles
them to C extensions that run the same code with fewer interpreter instructions. This is
never part of ``pip install``: the README's install commands stay pure Python on a machine
without a compiler, and a compiled build is one more command on a machine with one:

    .venv/bin/python -m metering_middleware._build            # compile in place
    .venv/bin/python -m metering_middleware._build --check    # which modules are compiled
    .venv/bin/python -m metering_middleware._build --clean    # back to pure Python

It compiles next to the sources of the installed package (an editable checkout or
site-packages: the directory must be writable), so the extension modules shadow the
``.py`` files of the same name (CPython's import system tries extension suffixes first)
and everything else (tests, the CLI, a server) picks them up with no other change.
Needs ``mypy`` (the ``test`` extra brings it) and a C compiler with Python's headers.
A build for another Python or after an edit of a compiled module is stale: ``--clean``,
or build again (the build always rebuilds from the current sources).

Why a command rather than a build hook: a hook in the wheel build would need mypy in the
build environment and a compiler on every installing machine, or a fallback that hides a
failed compile; a command that fails loudly and is undone with ``--clean`` is simpler to
trust. See docs/performance.md.
"""

from __future__ import annotations

import importlib.machinery
import json
import os
import sys
from pathlib import Path

from ._compiled import (
    _GROUP,
    _MANIFEST,
    _PACKAGE,
    _ROOT,
    HOT_MODULES,
    _digests,
    _source,
    compiled_modules,
)

__all__ = ["main"]


def _built_files() -> list[Path]:
    # Every extension module in the package, not only today's HOT_MODULES: the package
    # ships none of its own, and one left from a build of another list would be imported.
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    return [p for p in _PACKAGE.rglob("*") if p.name.endswith(suffixes)]


def _clean() -> int:
    files = _built_files()
    for path in files:
        path.unlink()
    _MANIFEST.unlink(missing_ok=True)
    print(f"removed {len(files)} compiled file(s): the hot modules are pure Python")
    return 0


def _fail(message: str) -> int:
    print(f"metering_middleware._build: {message}", file=sys.stderr)
    return 1


def _build(verbose: bool, opt_level: str = "3") -> int:
    import shutil
    import sysconfig
    import tempfile

    try:
        from mypyc.build import mypycify
        from setuptools import Distribution  # type: ignore[import-untyped,unused-ignore]
    except ImportError as exc:
        return _fail(f"needs mypy (mypyc) and setuptools ({exc})")
    compiler = sysconfig.get_config_var("CC") or "cc"
    if shutil.which(compiler.split()[0]) is None:
        return _fail(f"no C compiler ({compiler.split()[0]} is not on the PATH)")
    include = sysconfig.get_paths()["include"]
    if not Path(include, "Python.h").exists():
        return _fail(f"no Python.h in {include} (Python's development headers)")
    if not os.access(_PACKAGE, os.W_OK):
        return _fail(f"{_PACKAGE} is not writable")
    _clean()
    digests = _digests()
    paths = [str(_source(m).relative_to(_ROOT)) for m in HOT_MODULES]
    here = Path.cwd()
    with tempfile.TemporaryDirectory(prefix="metering-mypyc-") as tmp:
        os.chdir(_ROOT)  # mypy names the modules by their paths from the package's parent
        try:
            extensions = mypycify(
                paths, opt_level=opt_level, group_name=_GROUP, target_dir=str(Path(tmp, "c"))
            )
            dist = Distribution({"name": "metering_middleware", "ext_modules": extensions})
            dist.script_args = [
                *([] if verbose else ["--quiet"]),
                "build_ext",
                "--inplace",
                f"--parallel={os.cpu_count() or 1}",
                "--build-temp",
                str(Path(tmp, "o")),
                "--build-lib",
                str(Path(tmp, "lib")),
            ]
            dist.parse_command_line()
            dist.run_commands()
        except SystemExit as exc:  # mypyc and setuptools report a failure by exiting
            _clean()
            return _fail(f"compiling failed ({exc}); the hot modules stay pure Python")
        finally:
            os.chdir(here)
    if digests != _digests():
        _clean()
        return _fail("a source changed while it was compiled; nothing installed")
    manifest = {"cache_tag": sys.implementation.cache_tag, "sources": digests}
    _MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"compiled {len(HOT_MODULES)} modules in place under {_PACKAGE}")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m metering_middleware._build",
        description="Compile the request path's modules with mypyc (opt-in), or undo it.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--clean", action="store_true", help="remove the compiled modules")
    group.add_argument("--check", action="store_true", help="list the compiled hot modules")
    parser.add_argument("--verbose", action="store_true", help="show the compiler's commands")
    # The C compiler's level only: the compiled semantics are mypyc's, the same at every
    # level, so CI tests an -O0 build (a fraction of -O3's compile time) and a server
    # runs the default.
    parser.add_argument(
        "--opt-level",
        choices=["0", "1", "2", "3"],
        default="3",
        help="the C compiler's optimisation level (default: 3; 0 builds fastest, for tests)",
    )
    args = parser.parse_args(argv)
    if args.clean:
        return _clean()
    if args.check:
        done = compiled_modules()
        for name in HOT_MODULES:
            print(f"{'compiled' if name in done else 'python  '}  {name}")
        return 0
    return _build(args.verbose, args.opt_level)


if __name__ == "__main__":
    sys.exit(main())
