"""Logging failures without personal data.

An exception's message may quote what a customer said or sent (a validation
error repeating the input, a driver error with a row's values), so logs never
carry it: :func:`describe` gives the exception's type and where it was raised
(the stack frames, no message), which is what a developer needs to find the
bug.
"""

from __future__ import annotations

import traceback

__all__ = ["describe"]


def describe(exc: BaseException) -> str:
    """``TypeName`` plus the traceback frames of ``exc`` (and of its causes),
    without any exception message."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = "".join(traceback.format_tb(current.__traceback__)).rstrip()
        parts.append(f"{type(current).__name__}" + (f"\n{frames}" if frames else ""))
        current = current.__cause__ or current.__context__
    return "\ncaused by ".join(parts)
