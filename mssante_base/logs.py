"""Log lines as JSON objects, for a log collector ([logging] format = "json"; "text" keeps the usual lines).

Our log calls write ``what happened key=value key=%r ...``; here each line becomes one JSON object with the fields
of the text line (time, level, logger, message) and each ``key=value`` pair as a field of its own, a string: a bare
value as written, a quoted one (``%r``) unquoted. What does not read as a pair (a key twice,
a key of the line itself, a value quoted then glued to more text) stays in ``message``, as written. Client text
stays escaped as in the text lines (``\\xNN``, see ``printable``), and the JSON is ASCII: no raw byte of a client
reaches the log.
"""

from __future__ import annotations

import ast
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any, Literal

from mssante_base.smtp.replies import printable

LINE_FIELDS = ("time", "level", "logger", "message")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# key=value at the start or after a space; the value quoted ('...' or "...", as %r writes it) or bare, and then
# a space or the end. A bare value does not start with a quote: a quoted one glued to more text is no pair.
_PAIR = re.compile(r"""(?<!\S)([A-Za-z_][A-Za-z0-9_]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s'"]\S*)(?=\s|$)""")


def _value(text: str) -> str:
    """A pair's value: a quoted Python literal unquoted (control characters escaped again), else as written.

    Always a string, numbers too: an identifier made of digits (an INS, an id) must not turn into a number, and
    a key keeps one JSON type from line to line (a collector's index maps each field to one type)."""
    if text[0] in "'\"":
        try:
            return printable(str(ast.literal_eval(text)))
        except (ValueError, SyntaxError):
            return text
    return text


def line_fields(message: str) -> tuple[str, dict[str, str]]:
    """``message`` without its key=value pairs (joined by single spaces where pairs were taken), and the pairs."""
    fields: dict[str, str] = {}
    kept: list[str] = []
    start = 0
    for match in _PAIR.finditer(message):
        key = match.group(1)
        if key in LINE_FIELDS or key in fields:
            continue
        fields[key] = _value(match.group(2))
        kept.append(message[start:match.start()].strip(" "))
        start = match.end()
    kept.append(message[start:].strip(" "))
    return " ".join(part for part in kept if part), fields


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (a traceback is the ``exception`` field)."""

    def format(self, record: logging.LogRecord) -> str:
        message, fields = line_fields(printable(record.getMessage()))
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
            **fields,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=True)


def use_log_format(log_format: Literal["text", "json"]) -> None:
    """Have the root logger's handlers (``logging.basicConfig``'s) write ``log_format`` lines from now on."""
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)
