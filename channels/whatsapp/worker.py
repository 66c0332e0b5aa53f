"""The messaging worker: turns claimed inbox messages into engine turns whose
replies go out through the outbox, exactly once.

One per replica (started with the served app). It looks for due
conversations (:meth:`Inbox.due <channels.whatsapp.inbox.Inbox.due>`) when
woken by a webhook of this replica, and every ``poll_s`` for the others'
(and for leases that ran out), and runs at most one turn per conversation at
a time. For a claim it:

1. reads the messages oldest first: text as sent; a button or list reply, or
   "2" / "two" / a title, as the choice the last reply offered; a location as
   words; a voice note downloaded, decoded and transcribed (the transcript
   is what the engine reads); images, documents and the like get a polite
   line saying what the assistant can do; a reaction alone gets nothing;
2. on Meta, marks the newest message read and shows the typing indicator
   (best effort, through the outbox);
3. runs one engine turn on the joined text with a :class:`ReplyHook`, which
   renders the reply for the provider and commits its outbox rows together
   with the turn and the ``replied`` state of the messages.

Messages that give the engine nothing (a lone image, a voice note that could
not be heard) are answered directly, the same way: reply rows and the state
in one transaction, conditional on the claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from channels.whatsapp.choices import choice_for
from channels.whatsapp.inbox import Claim, InboundClaimLost, Inbox, ThreadKey
from channels.whatsapp.meta_codec import meta_send_payloads
from channels.whatsapp.models import InboundMessage, MessagingChannel, OutboundMessage
from channels.whatsapp.twilio_codec import twilio_send_params
from engine.config import ClientConfig, ClientRegistry
from engine.contract import TurnEngine, TurnOptions
from engine.db.fast import Tx
from engine.errors import SessionBusyError, StoreError
from engine.logs import describe
from engine.messages import (
    Channel,
    ChannelContext,
    ConversationResponse,
    NormalizedMessage,
    QuickReply,
)
from engine.outbox import Outbox, OutboxItem
from engine.payloads import MetaMessage, ReadReceipt, TwilioMessage
from engine.session import SessionKey

__all__ = [
    "MAX_ATTEMPTS",
    "MessagingWorker",
    "ReplyHook",
    "ThreadSendHook",
    "render_reply",
    "thread_send_hook",
]

log = logging.getLogger("channels.whatsapp.worker")

MAX_ATTEMPTS = 5
"""Claims of one message after which it is answered with an apology and
marked ``failed`` (a turn that keeps failing must not loop forever)."""

APOLOGY = (
    "Sorry, I'm having trouble on my side and couldn't answer that. "
    "Please try again in a little while."
)
_MEDIA_REPLY = (
    "Thanks! I can only read text and voice messages here. "
    "I can help you book an appointment or answer questions about {business} — "
    "just type what you need."
)
_UNHEARD = "Sorry, I couldn't listen to that voice message. Could you type it instead?"

Transcriber = Callable[[ClientConfig, InboundMessage], Awaitable[str]]
"""Downloads, decodes and transcribes a voice note; raises on failure."""


def render_reply(
    client: ClientConfig, key: ThreadKey, first: InboundMessage, reply: OutboundMessage
) -> list[OutboxItem]:
    """The outbox rows that send ``reply`` to the conversation, keyed by the
    first message answered (so a retried commit can never send twice)."""
    if not reply.text.strip():
        return []
    idem = f"reply:{first.provider}:{first.message_id}"
    if first.provider == "meta":
        meta = client.channels.whatsapp.meta
        return [
            OutboxItem(
                client.client_id,
                idem,
                MetaMessage(
                    to=key.sender,
                    phone_number_id=(meta.phone_number_id if meta else None) or first.business,
                    parts=tuple(meta_send_payloads(reply, to=key.sender)),
                    text=reply.text,
                ),
            )
        ]
    channel: MessagingChannel = "sms" if key.channel == "sms" else "whatsapp"
    creds, _key = client.channels.twilio_for(channel)
    configured = (creds.from_ if creds else None) or ""
    sender = first.business or configured.removeprefix("whatsapp:")
    if not sender:
        log.error("messaging: %s has no sender number to reply from; not sent", key)
        return []
    from_ = f"whatsapp:{sender}" if channel == "whatsapp" else sender
    return [
        OutboxItem(
            client.client_id,
            idem,
            TwilioMessage(
                channel=channel,
                to=key.sender,
                from_=from_ or None,
                parts=tuple(twilio_send_params(reply, channel=channel, to=key.sender, from_=from_)),
                text=reply.text,
            ),
        )
    ]


@dataclass(slots=True)
class ReplyHook:
    """Commits a claim's answer with the engine turn (:class:`engine.commit.CommitHook`)."""

    inbox: Inbox
    client: ClientConfig
    claim: Claim

    async def __call__(self, tx: Tx, response: ConversationResponse) -> Sequence[OutboxItem]:
        await self.inbox.consume_in(tx, self.claim)
        await self.inbox.set_choices_in(tx, self.claim.key, response.quick_replies)
        reply = OutboundMessage(response.text, tuple(response.quick_replies))
        return render_reply(self.client, self.claim.key, self.claim.messages[0], reply)


class MessagingWorker:
    """Answers the inbox (see the module docstring). ``run_turn`` is the
    engine's ``stream_turn``-backed call (tests pass the real engine's)."""

    def __init__(
        self,
        inbox: Inbox,
        registry: ClientRegistry,
        engine: TurnEngine,
        outbox: Outbox,
        *,
        transcribe: Transcriber | None = None,
        poll_s: float = 0.5,
        max_turns: int = 16,
    ) -> None:
        self.inbox, self.registry, self.engine, self.outbox = inbox, registry, engine, outbox
        self.transcribe = transcribe
        self.poll_s = poll_s
        self.max_turns = max_turns
        """Turns this replica runs at once; the rest wait ``received`` for the
        next look (bounded use of the database and Redis pools under load)."""
        self._active: dict[ThreadKey, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._loop(), name="messaging-worker")

    async def stop(self, drain_s: float = 10.0) -> None:
        """Stop looking; let running turns finish for up to ``drain_s`` (their
        messages are claimed again by a replica if they do not)."""
        self._stopping = True
        self.inbox.wake.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        running = list(self._active.values())
        if running:
            _done, pending = await asyncio.wait(running, timeout=drain_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    def _burst_s(self, client_id: str, channel: str) -> float:
        client = self.registry.get(client_id)
        if client is None:
            return 0.0
        chan = client.channels.sms if channel == "sms" else client.channels.whatsapp
        return chan.burst_window_ms / 1000

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                await self.look()
            except (StoreError, SessionBusyError) as exc:
                log.warning("messaging worker: %s; trying again", type(exc).__name__)
            except Exception as exc:
                log.error("messaging worker: %s", describe(exc))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self.inbox.wake.wait()
            self.inbox.wake.clear()

    async def look(self) -> int:
        """Start a turn for every due conversation not already being answered
        here; returns how many were started."""
        started = 0
        for key in await self.inbox.due(self._burst_s):
            if len(self._active) >= self.max_turns:
                break
            if key in self._active:
                continue
            task = asyncio.create_task(self._answer(key), name=f"messaging:{key}")
            self._active[key] = task
            task.add_done_callback(self._forget(key))
            started += 1
        return started

    def _forget(self, key: ThreadKey) -> Callable[[asyncio.Task[None]], None]:
        def done(_task: asyncio.Task[None]) -> None:
            self._active.pop(key, None)
            self.inbox.wake.set()  # a slot is free: look again at once

        return done

    async def idle(self) -> None:
        """Wait until no turn runs here (tests)."""
        while self._active:
            await asyncio.gather(*self._active.values(), return_exceptions=True)

    # -- one conversation --------------------------------------------------------------

    async def _answer(self, key: ThreadKey) -> None:
        try:
            claim = await self.inbox.claim(key)
        except SessionBusyError:
            return  # another replica is claiming it right now
        except StoreError as exc:  # the messages stay received: the next look retries
            log.warning("messaging: could not claim %s: %s", key, type(exc).__name__)
            return
        if claim is None:
            return
        client = self.registry.get(key.client_id)
        if client is None:
            log.error("messaging: client %s is gone; its messages wait", key.client_id)
            await self.inbox.release(claim)
            return
        try:
            await self._run(client, claim)
        except InboundClaimLost:
            log.warning("messaging: %s was taken over by another replica", key)
        except SessionBusyError:
            with contextlib.suppress(StoreError):  # else the lease gives them back
                await self.inbox.release(claim)
            self.inbox.wake.set()
        except Exception as exc:
            log.error("messaging: turn for %s failed: %s", key, describe(exc))
            if claim.attempts >= MAX_ATTEMPTS:
                try:
                    await self._direct(
                        client, claim, APOLOGY, state="failed", error=type(exc).__name__
                    )
                except (StoreError, InboundClaimLost) as again:
                    log.error("messaging: could not answer %s: %s", key, type(again).__name__)

    async def _run(self, client: ClientConfig, claim: Claim) -> None:
        text, direct = await self._read(client, claim)
        last = claim.messages[-1]
        if last.provider == "meta":
            await self._mark_read(client, last)
        if not text:
            await self._direct(client, claim, direct)
            return
        context = ChannelContext(
            caller_number=claim.key.sender,
            called_number=last.business,
            whatsapp_id=next((m.wa_id for m in reversed(claim.messages) if m.wa_id), None),
        )
        hook = ReplyHook(self.inbox, client, claim)
        message = NormalizedMessage(
            client_id=client.client_id,
            channel=Channel.parse(claim.key.channel),
            session_id=claim.key.sender,
            text=text,
            # No message_id: the claim may join several messages, and the inbox
            # consumes them itself in the turn's transaction (ReplyHook).
            context=context,
            sender=claim.key.sender,
        )
        stream = self.engine.stream_turn(message, TurnOptions(on_commit=hook))
        async for _event in stream:
            pass

    async def _read(self, client: ClientConfig, claim: Claim) -> tuple[str, str]:
        """The text for the engine (joined, oldest first), and what to answer
        directly when there is none."""
        choices = await self.inbox.choices(claim.key)
        said: list[str] = []
        direct = ""
        for msg in claim.messages:
            if msg.kind == "reaction":
                continue
            if msg.kind == "audio":
                heard = await self._hear(client, msg)
                if heard:
                    said.append(heard)
                else:
                    direct = direct or _UNHEARD
                continue
            if msg.kind in ("image", "document", "video", "sticker", "contacts", "unsupported"):
                if msg.text.strip():  # a caption
                    said.append(msg.text.strip())
                else:
                    direct = direct or _MEDIA_REPLY.format(business=client.name)
                continue
            text = msg.text.strip()
            chosen = choice_for(text, choices, msg.choice_id) if choices else None
            if chosen is not None:
                text = chosen
            if text:
                said.append(text)
        return "\n".join(said), direct

    async def _hear(self, client: ClientConfig, msg: InboundMessage) -> str:
        if self.transcribe is None or not msg.media:
            return ""
        try:
            return (await self.transcribe(client, msg)).strip()
        except Exception as exc:
            log.warning("messaging: a voice note could not be heard: %s", type(exc).__name__)
            return ""

    async def _mark_read(self, client: ClientConfig, msg: InboundMessage) -> None:
        meta = client.channels.whatsapp.meta
        item = OutboxItem(
            client.client_id,
            f"read:meta:{msg.message_id}",
            ReadReceipt(
                message_id=msg.message_id,
                phone_number_id=(meta.phone_number_id if meta else None) or msg.business,
            ),
        )

        async def write(tx: Tx) -> int:
            return await self.outbox.enqueue_in(tx, [item])

        try:
            if await self.inbox.db.fast.transaction(write):
                self.outbox.wake()
        except StoreError as exc:  # best effort: the reply matters, not the ticks
            log.warning("messaging: mark-read not queued: %s", type(exc).__name__)

    async def _direct(
        self,
        client: ClientConfig,
        claim: Claim,
        text: str,
        *,
        state: str = "replied",
        error: str | None = None,
    ) -> None:
        """Answer the claim without an engine turn (or nothing, for ``text`` ""),
        atomically with its state."""
        items = render_reply(client, claim.key, claim.messages[0], OutboundMessage(text))

        async def write(tx: Tx) -> int:
            await self.inbox.consume_in(tx, claim, state=state, error=error)
            await self.inbox.set_choices_in(tx, claim.key, list[QuickReply]())
            return await self.outbox.enqueue_in(tx, items)

        if await self.inbox.db.fast.transaction(write):
            self.outbox.wake()


@dataclass(slots=True)
class ThreadSendHook:
    """Sends a line written outside a customer turn (a staff reply) to the
    conversation's WhatsApp/SMS thread, committed with it
    (:class:`engine.commit.CommitHook`); ``idem``: its idempotency key. A
    conversation the inbox never saw (no thread) sends nothing."""

    client: ClientConfig
    key: ThreadKey
    idem: str

    async def __call__(self, tx: Tx, response: ConversationResponse) -> Sequence[OutboxItem]:
        row = await tx.fetchone(
            "SELECT provider, business FROM messaging_threads"
            " WHERE client_id = $1 AND channel = $2 AND sender = $3",
            self.key.client_id,
            self.key.channel,
            self.key.sender,
        )
        if row is None:
            log.warning("messaging: no thread for %s; the line is recorded only", self.key)
            return []
        first = InboundMessage(
            provider=row[0],
            channel=self.key.channel,  # type: ignore[arg-type]
            client_id=self.key.client_id,
            message_id=self.idem,
            sender=self.key.sender,
            kind="text",
            business=row[1],
        )
        return render_reply(self.client, self.key, first, OutboundMessage(response.text))


def thread_send_hook(client: ClientConfig, key: SessionKey, idem: str) -> ThreadSendHook | None:
    """A :class:`ThreadSendHook` for a WhatsApp/SMS conversation, else None
    (for :class:`engine.decisions.Decisions`: an approval's answer is sent)."""
    if key.channel not in ("whatsapp", "sms"):
        return None
    return ThreadSendHook(client, ThreadKey(key.client_id, key.channel, key.session_id), idem)
