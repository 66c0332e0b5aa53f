"""What a phone call as a whole is doing: named states, named transitions, one table.

:class:`~channels.phone.turns.TurnTaker` decides frame by frame who holds the
floor; this is the coarser view the call's coordinator
(:class:`~channels.phone.call.Call`) keeps and acts on. It is a pure state
machine: no clock, no I/O. An event a state has no row for leaves the state
as it is (e.g. our audio going out while the caller talks).

```mermaid
stateDiagram-v2
    [*] --> connecting
    connecting --> listening: started (Twilio's start message)
    listening --> user_speaking: caller_started (an STT stream opened)
    thinking --> user_speaking: caller_started (the reply being prepared is held)
    bot_speaking --> user_speaking: caller_started (barge-in onset: the bot paused)
    user_speaking --> thinking: asked (the caller's words went to the engine)
    listening --> thinking: asked (a DTMF entry)
    bot_speaking --> thinking: asked (a DTMF entry interrupted the bot)
    user_speaking --> listening: caller_done (nothing to answer)
    user_speaking --> thinking: resumed (a backchannel: the held reply goes on)
    listening --> bot_speaking: audio_out (a line, or a reply's first frame)
    thinking --> bot_speaking: audio_out (the filler or the reply's first frame)
    bot_speaking --> listening: reply_over
    thinking --> listening: reply_over (nothing was said)
    listening --> transferring: transfer (queued for Twilio)
    listening --> hanging_up: hang_up (queued for Twilio)
    listening --> ending: goodbye
    ending --> ended: closed
```

``transfer``, ``hang_up`` and ``goodbye`` apply from every live state (listening,
user_speaking, thinking, bot_speaking; ``goodbye`` also from transferring and
hanging_up), ``closed`` from every state. ``transferring`` and ``hanging_up``
only say what was handed to Twilio: the call goes on as before until Twilio
acts (it ends the stream), so they ignore the floor events. ``ending`` (the
goodbye is playing) takes no new turns, reprompts or a second goodbye.
"""

from __future__ import annotations

import enum
import logging

__all__ = ["CallEvent", "CallState", "CallStatus"]

log = logging.getLogger("channels.phone.state")


class CallState(enum.Enum):
    CONNECTING = "connecting"
    """The websocket is open; Twilio's ``start`` has not come yet."""
    LISTENING = "listening"
    """Nobody speaks: the bot waits for the caller."""
    USER_SPEAKING = "user_speaking"
    """The caller speaks (an STT stream is open); any reply is paused or held."""
    THINKING = "thinking"
    """The engine works on the caller's words; nothing of the reply played yet."""
    BOT_SPEAKING = "bot_speaking"
    """A reply's audio is going out."""
    TRANSFERRING = "transferring"
    """A transfer is queued for Twilio."""
    HANGING_UP = "hanging_up"
    """The engine's hang-up is queued for Twilio."""
    ENDING = "ending"
    """The goodbye is playing; the call hangs up after it."""
    ENDED = "ended"
    """The stream is closed."""


class CallEvent(enum.Enum):
    STARTED = "started"
    CALLER_STARTED = "caller_started"
    ASKED = "asked"
    CALLER_DONE = "caller_done"
    RESUMED = "resumed"
    AUDIO_OUT = "audio_out"
    REPLY_OVER = "reply_over"
    TRANSFER = "transfer"
    HANG_UP = "hang_up"
    GOODBYE = "goodbye"
    CLOSED = "closed"


_S, _E = CallState, CallEvent
_FLOOR = (_S.LISTENING, _S.USER_SPEAKING, _S.THINKING, _S.BOT_SPEAKING)
_TABLE: dict[tuple[CallState, CallEvent], CallState] = {
    (_S.CONNECTING, _E.STARTED): _S.LISTENING,
    (_S.LISTENING, _E.CALLER_STARTED): _S.USER_SPEAKING,
    (_S.THINKING, _E.CALLER_STARTED): _S.USER_SPEAKING,
    (_S.BOT_SPEAKING, _E.CALLER_STARTED): _S.USER_SPEAKING,
    (_S.USER_SPEAKING, _E.ASKED): _S.THINKING,
    (_S.LISTENING, _E.ASKED): _S.THINKING,
    (_S.BOT_SPEAKING, _E.ASKED): _S.THINKING,
    (_S.USER_SPEAKING, _E.CALLER_DONE): _S.LISTENING,
    (_S.USER_SPEAKING, _E.RESUMED): _S.THINKING,
    (_S.LISTENING, _E.AUDIO_OUT): _S.BOT_SPEAKING,
    (_S.THINKING, _E.AUDIO_OUT): _S.BOT_SPEAKING,
    (_S.BOT_SPEAKING, _E.REPLY_OVER): _S.LISTENING,
    (_S.THINKING, _E.REPLY_OVER): _S.LISTENING,
    **{(state, _E.TRANSFER): _S.TRANSFERRING for state in _FLOOR},
    **{(state, _E.HANG_UP): _S.HANGING_UP for state in _FLOOR},
    **{(state, _E.GOODBYE): _S.ENDING for state in (*_FLOOR, _S.TRANSFERRING, _S.HANGING_UP)},
    **{(state, _E.CLOSED): _S.ENDED for state in CallState if state is not _S.ENDED},
}


class CallStatus:
    """The state of one call, moved only by :meth:`on` with a named event.

    Args:
        call_sid: for debug log lines only.
    """

    def __init__(self, call_sid: str = "") -> None:
        self.call_sid = call_sid
        self._state = CallState.CONNECTING

    @property
    def state(self) -> CallState:
        return self._state

    @property
    def closing(self) -> bool:
        """The goodbye is playing or the stream is closed: take no new turns."""
        return self._state in (CallState.ENDING, CallState.ENDED)

    def on(self, event: CallEvent) -> CallState:
        """Apply ``event``; return the state after it (unchanged if the table has no row)."""
        after = _TABLE.get((self._state, event))
        if after is not None and after is not self._state:
            log.debug(
                "call %s: %s -> %s (%s)",
                self.call_sid,
                self._state.value,
                after.value,
                event.value,
            )
            self._state = after
        return self._state
