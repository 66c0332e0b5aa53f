"""Keys the caller presses, as one entry: a quick reply by number, or typed digits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from engine.messages import ConversationResponse, QuickReply

__all__ = ["DTMF_INTER_DIGIT_S", "DtmfEntry"]

DTMF_INTER_DIGIT_S = 1.5
"""Silence between keys that ends a DTMF entry, in seconds (``#`` ends it at once)."""

OnEntry = Callable[[str, str], Awaitable[None]]
"""Called with (the text to send to the engine, the keys pressed)."""
Spawn = Callable[[Coroutine[Any, Any, None]], "asyncio.Task[None]"]


class DtmfEntry:
    """Collects Twilio ``dtmf`` events (one key each: ``0``-``9``, ``*``, ``#``).

    Keys build one entry, ended by ``#`` or :data:`DTMF_INTER_DIGIT_S` without
    a key. A single key within the quick replies last offered (see
    :meth:`offer`) answers with that choice's value; anything else (a phone
    number, a date) is sent as the digits typed.

    Args:
        loop: the call's event loop (for the inter-digit timer).
        spawn: runs a coroutine as one of the call's tasks.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, spawn: Spawn) -> None:
        self._loop = loop
        self._spawn = spawn
        self._digits = ""
        self._timer: asyncio.TimerHandle | None = None
        self.quick_replies: tuple[QuickReply, ...] = ()
        """The choices the last reply offered by key (none, or two to five)."""

    @property
    def idle(self) -> bool:
        """No entry is being typed."""
        return not self._digits

    def offer(self, response: ConversationResponse | None) -> str:
        """'Or press 1 for A, 2 for B.' when ``response`` has 2-5 quick replies, else "".

        The choices are remembered, so a single key picks one.
        """
        options = response.quick_replies if response is not None else ()
        self.quick_replies = tuple(options) if 2 <= len(options) <= 5 else ()
        if not self.quick_replies:
            return ""
        parts = [f"{i} for {qr.title}" for i, qr in enumerate(self.quick_replies, 1)]
        return "Or press " + ", ".join(parts) + "."

    async def press(self, digit: str, on_entry: OnEntry) -> None:
        """One key; ``on_entry`` gets the entry once it is complete."""
        self._cancel_timer()
        if digit == "#":
            await self.flush(on_entry)
            return
        self._digits += digit
        self._timer = self._loop.call_later(
            DTMF_INTER_DIGIT_S, lambda: self._spawn(self.flush(on_entry))
        )

    async def flush(self, on_entry: OnEntry) -> None:
        """End the entry now (nothing happens if no key was pressed)."""
        digits, self._digits = self._digits, ""
        self._cancel_timer()
        if not digits:
            return
        text = digits
        if len(digits) == 1 and digits.isdigit() and 1 <= int(digits) <= len(self.quick_replies):
            text = self.quick_replies[int(digits) - 1].value
        await on_entry(text, digits)

    def close(self) -> None:
        """Drop the entry being typed (the call is over)."""
        self._cancel_timer()

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
