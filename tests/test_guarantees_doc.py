"""docs/guarantees.md names tests that exist: the promises cannot point at nothing.

A reference is ``tests/path.py`` or ``tests/path.py::test_name``; a following bare
``::test_name`` belongs to the file named last before it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "guarantees.md"
_REF = re.compile(r"(tests/[\w/]+\.py)?(::(test_\w+))?")


def _references() -> list[tuple[str, str | None]]:
    refs: list[tuple[str, str | None]] = []
    current: str | None = None
    for match in re.finditer(r"`([^`]*)`", DOC.read_text("utf-8")):
        text = match.group(1)
        parsed = _REF.fullmatch(text)
        if not parsed or not (parsed.group(1) or parsed.group(3)):
            continue
        if parsed.group(1):
            current = parsed.group(1)
        assert current is not None, f"{text!r} names a test before any file"
        refs.append((current, parsed.group(3)))
    return refs


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    return {n.name for n in tree.body if isinstance(n, functions) and n.name.startswith("test_")}


def test_every_test_the_guarantees_name_exists() -> None:
    refs = _references()
    assert len(refs) > 40, "the parser found too few references: is the format still the same?"
    missing = []
    for file, name in refs:
        path = ROOT / file
        if not path.is_file():
            missing.append(file)
        elif name is not None and name not in _tests_in(path):
            missing.append(f"{file}::{name}")
    assert missing == []


def test_the_readme_links_the_guarantees() -> None:
    assert "docs/guarantees.md" in (ROOT / "README.md").read_text("utf-8")
