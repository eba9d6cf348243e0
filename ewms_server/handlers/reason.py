"""The HTTP reason phrase of an error response: its message, made safe for the status line.

EWMS's clients (rest_tools, requests' raise_for_status) print the reason phrase, not the
body, so an error's text goes there too. The status line is one line of visible ASCII:
anything else (line breaks, control and non-ASCII characters) would break it or be refused by
Tornado, and a "<" would make Tornado send "Unknown" (its guard against reflected markup), so
it is written "&lt;".
"""

from __future__ import annotations

MAX_REASON = 200


def reason_phrase(message: str) -> str:
    """One line of printable ASCII, at most MAX_REASON characters; never empty."""
    out: list[str] = []
    for ch in message:
        if ch in "\t\r\n" or ch.isspace():
            if out and out[-1] != " ":
                out.append(" ")
        elif ch == "<":
            out.append("&lt;")
        elif " " < ch <= "~":
            out.append(ch)
        else:
            out.append("?")
        if len(out) > MAX_REASON:
            break
    text = "".join(out).strip()
    if len(text) > MAX_REASON:
        text = text[: MAX_REASON - 3].rstrip() + "..."
    return text or "Error"
