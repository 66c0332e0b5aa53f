"""The gateway's error tree. Vendor exceptions are mapped into it where they enter.

::

    GatewayError               ``retryable``: may the same call succeed if tried again? (False here)
    ├── ConfigError            a client folder or setting is invalid (file, key, reason)
    ├── UnknownClientError     no client with that id is loaded
    ├── UnknownPurposeError    no agent serves that purpose
    ├── SessionBusyError       the session lock could not be taken in time
    ├── StoreError             the database or Redis failed; ``disconnect``: the connection was lost
    ├── CommitConflict         the session changed under a turn (its commit was rolled back)
    ├── DuplicateMessageError  a committed turn already consumed this inbound message id
    ├── UnknownSessionError    a conversation the caller holds is gone (expired or lost)
    ├── ToolError              a tool (calendar, CRM, notifier) failed; ``retryable`` says if a retry may help
    │   ├── SlotTakenError     the calendar slot was booked by someone else meanwhile
    │   └── DeliveryError      a notice was not delivered (``engine.tools.notify``; ``retry_after_s``)
    └── SpeechError            the voice layer failed (``providers.speech.errors``); ``retryable``
        ├── SpeechUnavailableError  a provider cannot be set up here (package or model missing)
        ├── SttError           recognising an utterance failed
        └── TtsError           synthesising text failed

Store errors are raised ``from`` the driver's exception (``sqlite3``, ``asyncpg``,
SQLAlchemy) and name what failed and the driver's error type, never the SQL's
values (they hold what customers said). A provider's call that runs out of time
(:mod:`engine.providers`) raises its own family's error with ``retryable=True``.
"""

from __future__ import annotations

__all__ = [
    "CommitConflict",
    "ConfigError",
    "DuplicateMessageError",
    "GatewayError",
    "SessionBusyError",
    "SlotTakenError",
    "StoreError",
    "ToolError",
    "UnknownClientError",
    "UnknownPurposeError",
    "UnknownSessionError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    retryable: bool = False
    """True when trying the same call again may succeed (a timeout, a 503); the
    provider base (:mod:`engine.providers`) retries only these."""


class ConfigError(GatewayError):
    def __init__(self, file: str, key: str, reason: str) -> None:
        super().__init__(f"{file}: {key}: {reason}" if key else f"{file}: {reason}")
        self.file, self.key, self.reason = file, key, reason


class UnknownClientError(GatewayError):
    def __init__(self, client_id: str) -> None:
        super().__init__(f"unknown client {client_id!r}: no folder clients/{client_id}/ was loaded")
        self.client_id = client_id


class UnknownPurposeError(GatewayError):
    def __init__(self, purpose: str) -> None:
        super().__init__(f"unknown purpose {purpose!r}")
        self.purpose = purpose


class SessionBusyError(GatewayError):
    def __init__(self, key: str, timeout_s: float) -> None:
        super().__init__(f"session {key} stayed locked for {timeout_s:.1f} s")
        self.key, self.timeout_s = key, timeout_s


class StoreError(GatewayError):
    """The database or Redis failed. ``disconnect``: the connection was lost (an
    idempotent read may be run once more on a fresh one)."""

    def __init__(self, message: str, *, disconnect: bool = False) -> None:
        super().__init__(message)
        self.disconnect = disconnect


class CommitConflict(GatewayError):
    """Another writer saved the session first; nothing of this turn was written."""

    def __init__(self, key: str) -> None:
        super().__init__(f"session {key} changed during the turn; the turn was rolled back")
        self.key = key


class DuplicateMessageError(GatewayError):
    """The inbound message was already answered by a committed turn."""

    def __init__(self, key: str, message_id: str) -> None:
        super().__init__(f"message {message_id!r} of session {key} was already processed")
        self.key, self.message_id = key, message_id


class UnknownSessionError(GatewayError):
    """The session a live connection was using is no longer stored."""

    def __init__(self, key: str) -> None:
        super().__init__(f"session {key} is unknown or expired")
        self.key = key


class ToolError(GatewayError):
    def __init__(self, tool: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{tool}: {reason}")
        self.tool, self.reason, self.retryable = tool, reason, retryable


class SlotTakenError(ToolError):
    def __init__(self, start_iso: str) -> None:
        super().__init__("calendar", f"slot {start_iso} is already booked", retryable=False)
        self.start_iso = start_iso
