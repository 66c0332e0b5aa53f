"""Logging a failure on a call without putting what the caller said into the log.

Exceptions from the engine, the speech layer or the stores may quote user
input (a transcript, a reply that repeats a name or a number), so their text
never reaches a log line: only the exception's type name does. A traceback is
kept for programming errors only (:data:`PROGRAMMING_ERRORS`), whose messages
name code (an attribute, a type), not data.
"""

from __future__ import annotations

import logging

__all__ = ["PROGRAMMING_ERRORS", "log_failure"]

PROGRAMMING_ERRORS: tuple[type[BaseException], ...] = (
    AssertionError,
    AttributeError,
    NameError,
    NotImplementedError,
    RecursionError,
    TypeError,
)
"""Exception types logged with their traceback (their text holds no user data)."""


def log_failure(
    log: logging.Logger,
    level: int,
    exc: BaseException,
    message: str,
    *args: object,
) -> None:
    """Log ``message % args`` at ``level``, followed by ``exc``'s type name only.

    A traceback is attached when ``exc`` is one of :data:`PROGRAMMING_ERRORS`.
    """
    traceback = exc if isinstance(exc, PROGRAMMING_ERRORS) else None
    log.log(level, message + " (%s)", *args, type(exc).__name__, exc_info=traceback)
