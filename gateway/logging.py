"""Logging setup. Messages carry ids and reasons, never phone numbers, emails
or message text (those stay in the transcript store).

Ids come from outside (a client id from the URL path, a vendor's call id), so
the gateway's formatter escapes control characters in the whole formatted
record: a client id ``x\\nfake log line`` (``/web/chat/x%0Afake%20log%20line``)
cannot forge a second log line or an ANSI escape sequence. One record is
always one line; a traceback becomes one line with ``\\n`` in it.
"""

from __future__ import annotations

import logging

__all__ = ["OneLineFormatter", "configure_logging", "escape_controls"]

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# C0 controls, DEL, C1 controls (NEL U+0085 among them), and the line and
# paragraph separators that str.splitlines() and some log viewers break on.
_CONTROLS = [*range(0x00, 0x20), *range(0x7F, 0xA0), 0x2028, 0x2029]
_ESCAPES = str.maketrans(
    {
        code: _NAMED.get(chr(code), f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}")
        for code in _CONTROLS
    }
)


def escape_controls(text: str) -> str:
    """``text`` with each control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``).

    Backslashes are left as they are, so Windows paths stay readable; the
    output may therefore be ambiguous, but it is always one line.
    """
    return text.translate(_ESCAPES)


class OneLineFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose output (message, arguments, exception
    text and stack) is one line: control characters are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return escape_controls(super().format(record))


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_gateway", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(OneLineFormatter(_FORMAT))
        handler._gateway = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs every request's full URL at INFO; a Slack webhook's URL is its
    # secret, and other vendors put account ids there. Our providers log what
    # they did themselves, without secrets.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
