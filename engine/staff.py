"""What a person at the business does to a conversation: reply into it (a
takeover: the bot stays silent) and release it back to the bot.

Both write the conversation the way a user turn does (:mod:`engine.writes`:
the session lock, then load -> mutate -> commit, again on a conflict), with
the takeover state machine of :mod:`engine.takeover`. The admin API calls
these (``POST /admin/api/conversations/{id}/reply`` and ``/release``).
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from engine.agents import HUMAN
from engine.commit import CommitHook, Committer, TurnCommit
from engine.config import ClientConfig, ClientRegistry
from engine.contract import Replay
from engine.core import clean_text
from engine.effects import Effects
from engine.errors import (
    DuplicateMessageError,
    GatewayError,
    UnknownClientError,
    UnknownSessionError,
)
from engine.messages import ConversationResponse, ResponseMetadata
from engine.session import ConversationSession, LoadedSession, SessionKey, SessionStore, Turn
from engine.takeover import TakeoverState, transition
from engine.writes import SessionWrites

__all__ = ["Staff", "StaffReply", "TakeoverRefused"]


class TakeoverRefused(GatewayError):
    """A staff action the conversation's channel cannot take (a written reply
    into a phone call). The message says what happens instead."""


@dataclass(frozen=True, slots=True)
class StaffReply:
    """What :meth:`Staff.reply` did: the conversation, its takeover state after,
    the web replay event id of the reply (None off the web or for a duplicate)
    and whether ``reply_id`` had been delivered already."""

    key: SessionKey
    state: TakeoverState
    event_id: int | None
    duplicate: bool = False


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Staff:
    """Staff replies and releases for every loaded client."""

    def __init__(
        self,
        clients: ClientRegistry,
        store: SessionStore,
        writes: SessionWrites,
        committer: Committer,
    ) -> None:
        self.clients = clients
        self.store = store
        self.writes = writes
        self.committer = committer

    async def reply(
        self,
        client_id: str,
        channel: str,
        session_id: str,
        text: str,
        *,
        reply_id: str | None = None,
        replay: Replay | None = None,
        on_commit: CommitHook | None = None,
    ) -> StaffReply:
        """Deliver a reply a person at the business wrote into the conversation.

        The line joins the history as an assistant :class:`Turn` with
        ``staff=True`` (and the conversation log, ``staff: true``); the takeover
        state becomes ``human`` (the bot stays silent until :meth:`release`).
        ``replay``: the channel's event log (web): a ``complete`` event with the
        text, ``metadata.from = "staff"``, ``metadata.state`` and
        ``metadata.handoff`` = ``human`` is committed with it. ``reply_id``:
        the caller's id for this reply; a second call with the same id writes
        nothing and returns ``duplicate=True``. ``on_commit``: the channel's
        writes with it (a WhatsApp/SMS send through the outbox).

        Raises UnknownClientError, TakeoverRefused (phone: a live call is
        transferred, not written into), UnknownSessionError (no such
        conversation, or it expired), ValueError (empty text),
        SessionBusyError, StoreError.
        """
        client = self._client_for_staff(client_id, channel)
        text = clean_text(text).strip()
        if not text:
            raise ValueError("a staff reply needs a non-empty text")
        key = SessionKey(client_id, channel, session_id)
        message_id = f"staff:{reply_id}" if reply_id is not None else None
        turn_id = (
            hashlib.sha256(f"{key}\x00{message_id}".encode()).hexdigest()[:24]
            if message_id is not None
            else uuid.uuid4().hex[:24]
        )
        async with self.writes.locked(key):
            if message_id is not None and self.store.recently_processed(key, message_id):
                return StaffReply(key, "human", None, duplicate=True)
            for attempt in self.writes.attempts(
                key, on_retry=replay.reset if replay is not None else None
            ):
                with attempt:
                    loaded = await self._load(key)
                    session = loaded.session
                    session.takeover = transition(session.takeover, "staff_reply")
                    line = Turn(role="assistant", text=text, purpose=HUMAN, staff=True)
                    line.line_id = f"{turn_id}.0"
                    session.transcript.append(line)
                    session.updated_at = _utcnow()
                    response = _staff_response(text, session.takeover)
                    commit = _staff_commit(
                        session, loaded, turn_id, message_id, [line], response, replay
                    )
                    commit.hook, commit.response = on_commit, response
                    try:
                        await self.committer.commit(client, commit)
                    except DuplicateMessageError:
                        self.store.forget(key)  # it holds this attempt's changes
                        return StaffReply(key, "human", None, duplicate=True)
                    event_id = replay.last_id if replay is not None and replay.log else None
                    return StaffReply(key, session.takeover, event_id)
        raise AssertionError("unreachable")

    async def release(
        self, client_id: str, channel: str, session_id: str, *, replay: Replay | None = None
    ) -> TakeoverState:
        """Hand the conversation back to the bot: ``pending_human`` or ``human``
        become ``resolved`` (the bot answers the customer's next message, which
        moves it to ``bot``); ``bot`` and ``resolved`` stay as they are (nothing
        written). Returns the state after. ``replay`` (web): a ``complete`` with
        empty text and ``metadata.state``/``metadata.handoff`` = ``resolved``
        tells an open widget. Raises UnknownClientError, UnknownSessionError,
        SessionBusyError, StoreError (phone conversations may be released too).
        """
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        key = SessionKey(client_id, channel, session_id)
        async with self.writes.locked(key):
            for attempt in self.writes.attempts(
                key, on_retry=replay.reset if replay is not None else None
            ):
                with attempt:
                    loaded = await self._load(key)
                    session = loaded.session
                    after = transition(session.takeover, "release")
                    if after == session.takeover:
                        return after
                    session.takeover = after
                    session.updated_at = _utcnow()
                    response = ConversationResponse(
                        text="",
                        metadata=ResponseMetadata(
                            purpose=HUMAN,
                            state=after,
                            purpose_data={"from": "staff", "handoff": after},
                        ),
                    )
                    commit = _staff_commit(
                        session, loaded, uuid.uuid4().hex[:24], None, [], response, replay
                    )
                    await self.committer.commit(client, commit)
                    return after
        raise AssertionError("unreachable")

    async def _load(self, key: SessionKey) -> LoadedSession:
        """The conversation as committed; UnknownSessionError when there is none
        (never started, or expired)."""
        loaded = await self.store.load(key)
        if loaded is None:
            raise UnknownSessionError(str(key))
        return loaded

    def _client_for_staff(self, client_id: str, channel: str) -> ClientConfig:
        client = self.clients.get(client_id)
        if client is None:
            raise UnknownClientError(client_id)
        if channel == "phone":
            raise TakeoverRefused(
                "a phone call cannot take a written reply: the caller is transferred to "
                "escalation.phone_transfer_number (or called back) instead"
            )
        return client


def _staff_response(text: str, state: TakeoverState) -> ConversationResponse:
    return ConversationResponse(
        text=text,
        metadata=ResponseMetadata(
            purpose=HUMAN,
            state=state,
            purpose_data={"from": "staff", "handoff": state},
        ),
    )


def _staff_commit(
    session: ConversationSession,
    loaded: LoadedSession,
    turn_id: str,
    message_id: str | None,
    lines: list[Turn],
    response: ConversationResponse,
    replay: Replay | None,
) -> TurnCommit:
    events: list[tuple[int, str]] = []
    last_event_id = loaded.last_event_id
    if replay is not None:
        replay.add(loaded.last_event_id, response)
        events = list(replay.log)
        last_event_id = max(last_event_id, replay.last_id)
    return TurnCommit(
        session=session,
        version=loaded.version,
        turn_id=turn_id,
        message_id=message_id,
        effects=Effects(turn_id, session.key, test=session.test),
        lines=lines,
        purpose=session.purpose,
        events=events,
        last_event_id=last_event_id,
    )
