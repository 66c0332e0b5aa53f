"""Call actions a reply asks for (``transfer``, ``end_call``), handed to Twilio.

Both go through the outbox (kind ``twilio.call``, delivered by the gateway's
outbox worker with :class:`channels.phone.rest.TwilioCalls`): durable first,
so a transfer or hang-up is delivered exactly once, with retries, even if
this process dies right after the reply played.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Literal

from channels.phone.failures import log_failure
from channels.phone.state import CallEvent, CallStatus
from channels.phone.trace import CallTrace
from engine.config import ClientConfig
from engine.messages import Action
from engine.outbox import Outbox, OutboxItem
from engine.payloads import CallAction

__all__ = ["CALL_ACTION_TTL_S", "CallActions"]

log = logging.getLogger("channels.phone.actions")

CALL_ACTION_TTL_S = 120.0
"""A transfer or hang-up not delivered within this many seconds is dropped
(dead in the outbox): the call it was for is over by then."""


class CallActions:
    """Carries out ``transfer`` (to ``action.target``, E.164) and ``end_call`` for one call.

    With the client's Twilio credentials (``channels.phone.twilio``), each is
    queued as an outbox item: kind ``twilio.call``, key
    ``twilio:{call_sid}:{transfer|hangup}:{turns so far}`` (one per call and
    turn), payload ``call_sid``, ``action``, ``target`` and ``expires_ts``
    (Unix seconds, :data:`CALL_ACTION_TTL_S` ahead). Without credentials,
    ``end_call`` closes the media stream, which ends ``<Connect>`` and, as the
    TwiML has nothing after it, the call; ``transfer`` is refused (logged).

    Args:
        client: the client whose call this is.
        call_sid: Twilio's Call SID.
        outbox: the gateway's outbox (``app.state.outbox``).
        close_stream: closes the media stream.
        status: the call's state (moves to transferring / hanging_up once queued).
        trace: the call's trace (its turn count keys the outbox item).
    """

    def __init__(
        self,
        client: ClientConfig,
        call_sid: str,
        outbox: Outbox,
        close_stream: Callable[[], Awaitable[None]],
        status: CallStatus,
        trace: CallTrace,
    ) -> None:
        self.client = client
        self.call_sid = call_sid
        self.outbox = outbox
        self.close_stream = close_stream
        self.status = status
        self.trace = trace

    async def apply(self, action: Action) -> None:
        """Carry out ``action`` if it is a ``transfer`` or an ``end_call`` (others are
        for other channels). Never raises: a failure to queue is logged."""
        if action.type not in ("transfer", "end_call"):
            return
        creds = self.client.channels.phone.twilio
        if not creds.account_sid or not creds.auth_token:
            if action.type == "end_call":
                log.info("call %s: ending by closing the media stream", self.call_sid)
                await self.close_stream()
                return
            log.warning(
                "call %s: %s requested but client %r has no Twilio credentials",
                self.call_sid,
                action.type,
                self.client.client_id,
            )
            return
        if action.type == "transfer" and not action.target:
            log.warning("call %s: transfer without a number", self.call_sid)
            return
        kind: Literal["transfer", "hangup"] = "transfer" if action.type == "transfer" else "hangup"
        item = OutboxItem(
            client_id=self.client.client_id,
            key=f"twilio:{self.call_sid}:{kind}:{len(self.trace.turns)}",
            payload=CallAction(
                call_sid=self.call_sid,
                action=kind,
                target=action.target,
                expires_ts=time.time() + CALL_ACTION_TTL_S,
            ),
        )
        try:
            await self.outbox.enqueue([item])
        except Exception as exc:
            log_failure(
                log,
                logging.ERROR,
                exc,
                "call %s: %s could not be queued",
                self.call_sid,
                action.type,
            )
            return
        log.info("call %s: %s queued", self.call_sid, action.type)
        self.status.on(CallEvent.TRANSFER if kind == "transfer" else CallEvent.HANG_UP)
