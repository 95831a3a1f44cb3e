"""Whether the request path's modules run compiled (mypyc) or as Python source.

``python -m metering_middleware._build`` compiles ``HOT_MODULES`` in place; this module,
imported first by the package, keeps a stale build from being used: a build records the
SHA-256 of each source it compiled, and when one differs (an edit, another branch checked
out) every hot module is loaded from its ``.py`` file instead, with a warning. Standard
library only, and never compiled itself.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TypeVar

__all__ = ["HOT_MODULES", "PURE_PYTHON_ENV", "compiled_modules", "mypyc_attr", "use_fresh_build"]

#: Set to 1: the hot modules run as Python source even when a fresh build is there.
PURE_PYTHON_ENV = "METERING_PURE_PYTHON"

_T = TypeVar("_T")

try:  # class options mypyc reads when it compiles a hot module
    from mypy_extensions import mypyc_attr
except ImportError:  # not installed (mypy brings it): pure Python, where they mean nothing

    def mypyc_attr(*attrs: str, **kwattrs: object) -> Callable[[_T], _T]:
        return lambda cls: cls


#: The modules a metered call runs through (bench/profile_bench.py), compiled together.
#: Not the stores, rating or operations code (off the request path).
HOT_MODULES = (
    "metering_middleware.middleware",
    "metering_middleware.identity",
    "metering_middleware.signing",
    "metering_middleware.outcome",
    "metering_middleware.credentials",
    "metering_middleware.entitlements",
    "metering_middleware.metrics",
    "metering_middleware.limiter.memory",
    "metering_middleware.limiter.headers",
    "metering_middleware.ledger.ids",
)
# Not ``ledger.records``: settlement (rating/_rows.py) makes a million ``CallRecord``s
# with ``object.__new__`` and sets their slots, which a compiled class refuses. Not
# ``durable_nonces``: ``@runtime_checkable`` refuses a compiled Protocol class. Not
# ``limiter.base``, ``nonces``, ``context``: compiled with these, one measurement counted
# more instructions per call, not fewer (bench/RESULTS.md, 2026-12-01 late evening).
#: The shared library mypyc puts every compiled module's code in (inside the package, so
#: an editable install, whose import hook maps only the packages, finds it too).
_GROUP = "metering_middleware._hot"

_PACKAGE = Path(__file__).resolve().parent
_ROOT = _PACKAGE.parent
#: What the build compiled: each source's SHA-256 and the interpreter's cache tag.
_MANIFEST = _PACKAGE / "_hot.json"


def _source(name: str) -> Path:
    return _ROOT.joinpath(*name.split(".")).with_suffix(".py")


def _digests() -> dict[str, str]:
    return {m: hashlib.sha256(_source(m).read_bytes()).hexdigest() for m in HOT_MODULES}


class _SourceFirst:
    """A meta path finder that loads the package's modules from their ``.py`` files.

    Every module of the package, not only today's ``HOT_MODULES``: a build of another
    list (an older checkout's) may have left extensions this list no longer names.
    """

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not name.startswith("metering_middleware."):
            return None
        source = _source(name)
        if not source.is_file():
            return None  # a package (its __init__.py) or not ours: the usual finders
        loader = importlib.machinery.SourceFileLoader(name, str(source))
        return importlib.util.spec_from_file_location(name, source, loader=loader)


def use_fresh_build() -> None:
    """Run when the package is imported: a compiled build whose sources changed since is not used.

    A stale extension would run the code as it was when compiled, not the code on disk
    (an edited middleware, a checkout of another branch). Then every hot module is loaded
    from its source instead (all of them: compiled modules call each other directly, so a
    half-compiled set would mix old and new code), with a warning saying how to rebuild.
    No build (no manifest): nothing to do, one ``stat``. ``METERING_PURE_PYTHON=1`` in
    the environment loads the sources even from a fresh build (an A/B, or to rule the
    build out), without a warning.
    """
    if os.environ.get(PURE_PYTHON_ENV) == "1":
        sys.meta_path.insert(0, _SourceFirst())
        return
    try:
        built = json.loads(_MANIFEST.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError):
        built = {}
    fresh = (
        built.get("cache_tag") == sys.implementation.cache_tag
        and built.get("sources") == _digests()
    )
    if fresh:
        return
    sys.meta_path.insert(0, _SourceFirst())
    warnings.warn(
        "metering_middleware: the compiled hot modules are older than their sources; "
        "running the pure-Python ones (python -m metering_middleware._build to rebuild, "
        "--clean to remove)",
        RuntimeWarning,
        stacklevel=2,
    )


def compiled_modules() -> list[str]:
    """The hot modules that import as extension modules (compiled) in this interpreter."""
    import importlib

    found = []
    for name in HOT_MODULES:
        module = importlib.import_module(name)
        loader = getattr(module, "__loader__", None)
        if isinstance(loader, importlib.machinery.ExtensionFileLoader):
            found.append(name)
    return found


use_fresh_build()  # on import: the package imports this module before any hot module
