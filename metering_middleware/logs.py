"""The meter's log lines: plain text by default, JSON lines when configured.

Every logger of the package is named under ``metering_middleware.`` and is
configured with stdlib ``logging`` like any other (docs/logging.md). The lines
that matter to an operator carry their fields in ``record.metering`` (a dict
with an ``event`` name: ``call.refused``, ``ledger.store_failed``,
``settlement.run``, ``notice.recorded``...), so a handler with
:class:`JsonFormatter` writes them as one JSON object a line with fixed keys
(:data:`FIELDS`), and a text handler prints the message, which carries the
same values as ``key=value``.

``log_format = "json"`` (``MeteringConfig``) makes a started runtime add one
stderr handler with :class:`JsonFormatter` to the ``metering_middleware``
logger (:func:`acquire_json`, released on stop); ``"text"`` leaves logging as
the application configured it.

Stdlib logging and this formatter, not python-json-logger or structlog:
importing either costs more than the whole formatter (measured in
docs/logging.md), a line costs no less, and stdlib logging is what operators
already configure (``dictConfig``, uvicorn's ``log_config``).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, Final, Literal

__all__ = [
    "FIELDS",
    "LOGGER",
    "JsonFormatter",
    "LogFormat",
    "acquire_json",
    "fields",
    "refused",
    "release_json",
]

#: The package's root logger; every module logs under it.
LOGGER: Final = "metering_middleware"

LogFormat = Literal["text", "json"]

#: The keys of every JSON line, in this order; null where a line has no value for one.
#: An event's own fields (``status``, ``code``, ``records``...) follow them.
FIELDS: Final = (
    "timestamp",
    "level",
    "logger",
    "event",
    "message",
    "account",
    "access_key_id",
    "category",
    "action",
    "record_id",
    "request_id",
    "outcome",
    "reason",
)
_CORE: Final = FIELDS[5:]


def fields(event: str, **values: Any) -> dict[str, Any]:
    """The ``extra=`` of a structured line: ``log.info(msg, extra=fields("x.y", account=a))``."""
    return {"metering": {"event": event, **values}}


def _timestamp(record: logging.LogRecord) -> str:
    # UTC, ISO 8601, milliseconds, ``Z``: sortable as text, and what log stores parse.
    # (gmtime + strftime: half the cost of a datetime's isoformat, measured.)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z"
    )


#: One encoder for every line (``json.dumps`` with options builds one per call). ASCII
#: only: a caller's text may hold U+2028 or U+0085, which line-splitting readers (Python's
#: ``splitlines``) take for line ends; escaped, a line is always one physical line.
_ENCODER: Final = json.JSONEncoder(default=str, ensure_ascii=True, separators=(",", ":"))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: :data:`FIELDS`, then the event's own fields.

    Any logger's records are formatted (uvicorn's too): a record without
    ``record.metering`` has a null ``event``. Values that are not JSON types
    are written as their ``str``; an exception's traceback goes under ``exception``.
    """

    def format(self, record: logging.LogRecord) -> str:
        data: Mapping[str, Any] = getattr(record, "metering", None) or {}
        line: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "event": data.get("event"),
            "message": record.getMessage(),
        }
        for key in _CORE:
            line[key] = data.get(key)
        for key, value in data.items():
            if key not in line:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _ENCODER.encode(line)


#: One line per refused call (INFO); silence it alone with this logger's level.
_calls = logging.getLogger(LOGGER + ".calls")
#: A caller's AccessKeyId is its own text (an unknown one too): bounded in a line.
_ID_LIMIT = 128


def refused(
    *,
    account: str,
    access_key_id: str,
    category: str,
    action: str,
    status: int,
    code: str,
    reason: str,
    request_id: str,
) -> None:
    """The ``call.refused`` line: who (as far as known), what, and why; never a secret.

    ``request_id`` is the RequestId of the refusal's error body, the one the
    client holds (a refused call reaches no upstream).
    """
    if not _calls.isEnabledFor(logging.INFO):
        return
    key = access_key_id[:_ID_LIMIT] or None
    _calls.info(
        # %r for the caller's own text: a newline in it cannot forge a second line.
        "call refused: status=%d code=%s account=%s access_key_id=%r action=%s.%s request_id=%s",
        status,
        code,
        account or "-",
        key,
        category or "-",
        action or "-",
        request_id,
        extra=fields(
            "call.refused",
            account=account or None,
            access_key_id=key,
            category=category or None,
            action=action or None,
            request_id=request_id,
            outcome="refused",
            reason=reason,
            status=status,
            code=code,
        ),
    )


# One JSON handler per process however many runtimes asked for it (a gateway has
# one; tests start many): added by the first, removed with the last.
_lock = threading.Lock()
_users = 0
_handler: logging.Handler | None = None
_saved: tuple[int, bool] = (logging.NOTSET, True)


def acquire_json(stream: Any = None) -> None:
    """JSON lines on stderr (or ``stream``) for the ``metering_middleware`` loggers.

    The logger stops propagating while the handler is on, so a root handler does
    not print each line a second time as text; a logger level left unset becomes
    INFO (refusals, settlement runs and notices are INFO lines).
    """
    global _users, _handler, _saved
    with _lock:
        _users += 1
        if _handler is not None:
            return
        logger = logging.getLogger(LOGGER)
        handler = logging.StreamHandler(sys.stderr if stream is None else stream)
        handler.setFormatter(JsonFormatter())
        _saved = (logger.level, logger.propagate)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        logger.propagate = False
        logger.addHandler(handler)
        _handler = handler


def release_json() -> None:
    """Undo one :func:`acquire_json`; the last one removes the handler."""
    global _users, _handler
    with _lock:
        if _users == 0:
            return
        _users -= 1
        if _users or _handler is None:
            return
        logger = logging.getLogger(LOGGER)
        logger.removeHandler(_handler)
        _handler = None
        level, propagate = _saved
        logger.setLevel(level)
        logger.propagate = propagate
