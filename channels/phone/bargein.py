"""The caller speaking over the bot: pause at once, and trace what it turned out to be."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from channels.phone.playback import PacedPlayer
from channels.phone.trace import BARGE_IN_SECONDS, BargeInTrace, CallTrace

__all__ = ["BargeIns", "Outcome"]

log = logging.getLogger("channels.phone.bargein")

Outcome = Literal["interrupted", "resumed", "answered"]


class BargeIns:
    """Barge-ins of one call, each a :class:`~channels.phone.trace.BargeInTrace`.

    :meth:`onset` pauses the player (Twilio ``clear`` if it holds audio of
    ours) and opens a trace; :meth:`settle` records the outcome and the
    reaction time (speech onset -> ``clear`` sent, exported in seconds as
    ``gateway_phone_barge_in_seconds{outcome}``). Times: the loop's monotonic
    seconds.
    """

    def __init__(
        self, player: PacedPlayer, trace: CallTrace, clock: Callable[[], float], call_sid: str
    ) -> None:
        self.player = player
        self.trace = trace
        self.clock = clock
        self.call_sid = call_sid
        self._pending: BargeInTrace | None = None

    async def onset(self, onset_s: float) -> None:
        """The caller started speaking over the bot at ``onset_s``: pause it now."""
        had_audio_out = self.player.lead_ms > 0
        await self.player.pause()
        barge = self._pending = BargeInTrace(onset=onset_s)
        self.trace.barge_ins.append(barge)
        if had_audio_out:
            barge.clear_sent = self.clock()
        log.info("call %s: caller spoke over the bot; paused", self.call_sid)

    def settle(self, outcome: Outcome) -> None:
        """What the pending barge-in (if any) turned out to be."""
        barge, self._pending = self._pending, None
        if barge is None:
            return
        barge.outcome = outcome
        if (reaction := barge.reaction_ms) is not None:
            BARGE_IN_SECONDS.labels(outcome).observe(reaction / 1000)
