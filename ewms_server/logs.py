"""Server logging: one record is one line, whatever a client put in the text it logs.

Requests carry text the server logs (paths, ids, token subjects, error messages); a CR, LF or
other control character in it would start a forged line. The formatter escapes every control
character in the message (`\\n`, `\\r`, `\\t`, else `\\xNN` / `\\uNNNN`), and in a traceback the
exception's text, while the traceback's own lines stay as Python wrote them.
"""

from __future__ import annotations

import logging
import re
import sys
import traceback
from types import TracebackType

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# C0 and C1 controls, DEL, and the Unicode line and paragraph separators
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape_one(m: re.Match[str]) -> str:
    c = m.group()
    return _NAMED.get(c) or (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")


def escape(text: str) -> str:
    """`text` with every control character written as an escape: never more than one line."""
    return _CONTROL.sub(_escape_one, text)


class EscapingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape(record.message)
        return super().formatMessage(record)

    def formatException(
        self, ei: tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]
    ) -> str:
        if ei[1] is None:
            return "NoneType: None"
        return "".join(_traceback_lines(traceback.TracebackException.from_exception(ei[1]))).rstrip("\n")


def _traceback_lines(te: traceback.TracebackException) -> list[str]:
    """traceback.format_exception's lines, with each exception's own text escaped."""
    out: list[str] = []
    if te.__cause__ is not None:
        out += _traceback_lines(te.__cause__)
        out.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif te.__context__ is not None and not te.__suppress_context__:
        out += _traceback_lines(te.__context__)
        out.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if te.stack:
        out.append("Traceback (most recent call last):\n")
        out += te.stack.format()
    out += [escape(chunk.rstrip("\n")) + "\n" for chunk in te.format_exception_only()]
    return out


def configure(level: str) -> None:
    """Log to stderr through the escaping formatter (what `ewms-server` runs with)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(EscapingFormatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # pika logs every connection's life at INFO; its warnings and errors are what matter
    logging.getLogger("pika").setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)
