"""The gateway's error tree. Vendor exceptions are mapped into it where they enter.

::

    GatewayError
    ├── ConfigError            a client folder or setting is invalid (file, key, reason)
    ├── UnknownClientError     no client with that id is loaded
    ├── UnknownPurposeError    no agent serves that purpose
    ├── SessionBusyError       the session lock could not be taken in time
    ├── StoreError             the session store (memory/Redis) failed
    └── ToolError              a tool (calendar, CRM, notifier) failed; ``retryable`` says if a retry may help
        └── SlotTakenError     the calendar slot was booked by someone else meanwhile
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "GatewayError",
    "SessionBusyError",
    "SlotTakenError",
    "StoreError",
    "ToolError",
    "UnknownClientError",
    "UnknownPurposeError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


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
    pass


class ToolError(GatewayError):
    def __init__(self, tool: str, reason: str, *, retryable: bool = False) -> None:
        super().__init__(f"{tool}: {reason}")
        self.tool, self.reason, self.retryable = tool, reason, retryable


class SlotTakenError(ToolError):
    def __init__(self, start_iso: str) -> None:
        super().__init__("calendar", f"slot {start_iso} is already booked", retryable=False)
        self.start_iso = start_iso
