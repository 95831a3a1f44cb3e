"""Rendering CLI results as a table, JSON or CSV on stdout."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any, TextIO

__all__ = ["STREAMED_FORMATS", "RowStream", "render"]

#: The formats ``RowStream`` writes as rows come; a table needs every row for its widths.
STREAMED_FORMATS = frozenset({"json", "csv"})


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)  # exact: never a float
    return value


def render(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], fmt: str, out: TextIO
) -> None:
    if fmt == "json":
        json.dump(
            [{c: _json_value(r.get(c)) for c in columns} for r in rows],
            out,
            ensure_ascii=False,
            indent=2,
        )
        out.write("\n")
    elif fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in columns])
        out.write(buf.getvalue())
    else:
        cells = [[_cell(r.get(c)) for c in columns] for r in rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
        out.write("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
        out.write("\n")
        out.write("  ".join("-" * w for w in widths) + "\n")
        for row in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
            out.write("\n")


class RowStream:
    """``render``'s JSON or CSV, produced piece by piece: the same bytes, in constant memory.

    ``head()``, then ``rows()`` for each batch, then ``tail()``; each returns the text to
    write, so the caller decides where the writing happens (off the event loop). JSON is
    one array, exactly as ``render`` prints it (``indent=2``): a reader that loads
    ``render``'s output loads this one unchanged.
    """

    __slots__ = ("_columns", "_first", "_fmt", "_keys")

    def __init__(self, columns: Sequence[str], fmt: str) -> None:
        if fmt not in STREAMED_FORMATS:
            raise ValueError(f"cannot stream {fmt!r}: only {sorted(STREAMED_FORMATS)}")
        self._columns = tuple(columns)
        self._fmt = fmt
        self._first = True
        # Each key's line start, as json.dump(indent=2) writes it two levels in.
        self._keys = [f"    {_SCALAR(c)}: " for c in self._columns]

    def head(self) -> str:
        if self._fmt == "csv":
            return self._csv([list(self._columns)])
        return ""

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> str:
        if not rows:
            return ""
        if self._fmt == "csv":
            return self._csv([[_cell(r.get(c)) for c in self._columns] for r in rows])
        parts = []
        for r in rows:
            values = [_json_value(r.get(c)) for c in self._columns]
            if not self._columns or any(isinstance(v, dict | list | tuple) for v in values):
                item = json.dumps(
                    dict(zip(self._columns, values, strict=True)), ensure_ascii=False, indent=2
                )
                # json.dump(list, indent=2) puts each item one level in: every line 2 more.
                item = _indent(item)
            else:
                # Flat rows (the common case) by hand: json's indenting encoder is pure
                # Python, several times slower than encoding each scalar in C.
                body = ",\n".join(k + _SCALAR(v) for k, v in zip(self._keys, values, strict=True))
                item = "  {\n" + body + "\n  }"
            parts.append(("[\n" if self._first else ",\n") + item)
            self._first = False
        return "".join(parts)

    def tail(self) -> str:
        if self._fmt == "csv":
            return ""
        return "[]\n" if self._first else "\n]\n"

    @staticmethod
    def _csv(rows: list[list[str]]) -> str:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(rows)
        return buf.getvalue()


_SCALAR = json.JSONEncoder(ensure_ascii=False).encode


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.split("\n"))
