"""Lead capture with a language model: it understands and it phrases; the state
machine decides.

Two model calls around the offline flow (``transitions.py``), per turn:

1. **Understanding** — a bounded tool loop (at most :data:`MAX_ROUNDS` model
   calls, function calling with ``tool_mode="any"``). The model may call the
   read-only engine tool ``check_availability`` (the calendar's free times
   for a day, as the flow would offer them) and ends with one of the flow's
   *acts*: ``update_booking`` (slot values from free text: corrections,
   relative references — "my wife Ana will come, not me" gives the name
   Ana — and further services), ``confirm_booking``, ``change_booking``,
   ``cancel_booking``, ``ask_for_person`` or ``other_topic``. The act picks
   the transition; each argument is then validated exactly like typed input
   (:meth:`SlotFiller.apply <purposes.lead_capture.slots.SlotFiller.apply>`):
   a value that fails is "not understood" for its slot, never written.
   Booking, recording the lead and escalating stay the flow's own
   transitions (the engine's atomic commit writes them).
2. **Phrasing** — the flow's reply (its facts: services, prices, dates,
   times, the question asked) is rewritten by the model in the business's
   tone, streamed sentence by sentence. A sentence is sent only when every
   number and e-mail in it is one of the draft's; at the end every number,
   e-mail and service name of the draft must have been said, and a question
   must still be a question. Otherwise the streamed sentences are withdrawn
   (:class:`~engine.messages.Discard`) and the draft goes out as written.

Any model failure (an :class:`~engine.llm.LlmError`: timeout, 5xx, 429,
blocked, malformed output, a function the flow does not know) makes the
offline flow carry the turn from where it is: before understanding, the
rules read the message; before phrasing, the draft is sent. The turn commits
exactly as an offline turn would.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

from engine.agents import AgentReply, TurnContext, chunk_text
from engine.llm import (
    FunctionCall,
    FunctionDecl,
    FunctionResponse,
    LlmError,
    LlmMessage,
    LlmReason,
    LlmRequest,
)
from engine.llm.prompt import business_brief, conversation
from engine.messages import Discard, TextDelta, ToolCall, ToolResult
from purposes.lead_capture.availability import Availability, format_day, format_short
from purposes.lead_capture.state import LeadState, Stage

__all__ = ["MAX_ROUNDS", "TOOLS", "Understanding", "phrase", "understand"]

MAX_ROUNDS = 3
"""Model calls in one understanding (read-only tool rounds included)."""

Act = Literal["update", "confirm", "change", "cancel", "person", "other"]

_STRING = {"type": "string"}
TOOLS: tuple[FunctionDecl, ...] = (
    FunctionDecl(
        "check_availability",
        "Free appointment start times on a day (local time), as the calendar has them. "
        "Read-only: use it when the customer asks what is free or for the earliest time.",
        {
            "type": "object",
            "properties": {
                "date": {"type": "string", "description": "YYYY-MM-DD"},
                "service": {"type": "string", "description": "a service name, if known"},
            },
            "required": ["date"],
        },
    ),
    FunctionDecl(
        "update_booking",
        "Record what the customer's latest message says about the booking: only values "
        "stated or clearly meant in it; a correction replaces the earlier value. The name "
        "is the person who will attend. Omit what the message does not give.",
        {
            "type": "object",
            "properties": {
                "service": {"type": "string", "description": "one of the services' names"},
                "name": {"type": "string", "description": "the attendee's name"},
                "phone": {"type": "string", "description": "as the customer gave it"},
                "email": _STRING,
                "date": {"type": "string", "description": "YYYY-MM-DD"},
                "time": {"type": "string", "description": "HH:MM, 24-hour clock"},
                "notes": {"type": "string", "description": "anything else for the visit"},
                "also_book": {
                    "type": "array",
                    "items": _STRING,
                    "description": "further services to book after this one",
                },
            },
        },
    ),
    FunctionDecl(
        "confirm_booking", "The customer agrees to the booking summary they were shown (yes)."
    ),
    FunctionDecl(
        "change_booking",
        "The customer does not agree with the summary, or wants to change something "
        "without giving the new value yet.",
        {
            "type": "object",
            "properties": {
                "field": {
                    "type": "string",
                    "enum": ["name", "phone", "email", "service", "time"],
                }
            },
        },
    ),
    FunctionDecl("cancel_booking", "The customer no longer wants to book (never mind, stop)."),
    FunctionDecl("ask_for_person", "The customer wants to talk to a person / a human."),
    FunctionDecl(
        "other_topic",
        "The message gives nothing for the booking: a question about the business "
        "(parking, prices policy, products), small talk, or a thank-you.",
    ),
)
_ACTS: dict[str, Act] = {
    "update_booking": "update",
    "confirm_booking": "confirm",
    "change_booking": "change",
    "cancel_booking": "cancel",
    "ask_for_person": "person",
    "other_topic": "other",
}
_PRIORITY: tuple[Act, ...] = ("person", "cancel", "update", "change", "confirm", "other")
_SLOT_ARGS = ("service", "name", "phone", "email", "date", "time", "notes")


@dataclass(frozen=True, slots=True)
class Understanding:
    """What the model read in the message: the act (which transition) and the
    raw, not yet validated, slot values (``date`` ``YYYY-MM-DD``, ``time``
    ``HH:MM``), further services and the field to change."""

    act: Act
    slots: Mapping[str, str] = field(default_factory=dict)
    also: tuple[str, ...] = ()
    change: str | None = None

    @classmethod
    def from_calls(cls, calls: list[FunctionCall]) -> Understanding:
        """Merge the acts of one answer (``update_booking`` with values wins over
        ``confirm_booking``: "yes, but make it 4pm" changes the time first).
        Raises ValueError for an unknown function or malformed arguments."""
        acts: list[Act] = []
        slots: dict[str, str] = {}
        also: list[str] = []
        change: str | None = None
        for call in calls:
            act = _ACTS.get(call.name)
            if act is None:
                raise ValueError(f"unknown function {call.name!r}")
            args = dict(call.args or {})
            if act == "update":
                for key in _SLOT_ARGS:
                    value = args.get(key)
                    if isinstance(value, str | int | float) and str(value).strip():
                        slots[key] = str(value).strip()[:200]
                extra = args.get("also_book") or []
                if not isinstance(extra, list):
                    raise ValueError("also_book is not a list")
                also.extend(str(v)[:100] for v in extra if str(v).strip())
                if not slots and not also:
                    continue  # an empty update says nothing
            if act == "change" and isinstance(args.get("field"), str):
                change = args["field"]
            acts.append(act)
        if not acts:
            return cls("update")
        chosen = min(acts, key=_PRIORITY.index)
        return cls(chosen, slots, tuple(also), change)


def _brief(ctx: TurnContext) -> str:
    earlier = ctx.contact.summary() if ctx.contact is not None else ""
    return business_brief(ctx.client, ctx.now, ctx.session.channel, earlier=earlier)


def _state_lines(ctx: TurnContext, st: LeadState) -> str:
    fields = ctx.client.booking.rules.lead_fields
    have = ", ".join(f"{k}={v}" for k, v in st.slots.items() if k in fields) or "nothing yet"
    missing = ", ".join(f for f in fields if f not in st.slots) or "nothing"
    if st.stage == Stage.CONFIRMING:
        where = "The customer was shown the booking summary and asked to confirm it (yes/no)."
    elif st.expecting:
        where = f"The last question asked the customer for: {st.expecting}."
    else:
        where = "The booking has just started."
    return (
        "Your job now: read the customer's latest message and call the functions that "
        "record what it says about their booking.\n"
        f"Booking so far: {have}. Still needed: {missing}. {where}\n"
        "Rules: dates as YYYY-MM-DD (use the 14-day list), times as HH:MM on a 24-hour "
        "clock; service names exactly as listed; never guess a phone number or e-mail; "
        "'my wife Ana will come, not me' means the name is Ana. When the customer asks "
        "for the earliest or a free time on a day, call check_availability for that day "
        "first, then update_booking with the time they want (the first free one for "
        "'earliest'). A question about the business that gives nothing for the booking "
        "is other_topic."
    )


async def _availability(ctx: TurnContext, st: LeadState, args: Mapping[str, Any]) -> dict[str, Any]:
    """``check_availability``: free start times on ``date`` for the service (the
    one named, else the booking's, else the default slot length)."""
    try:
        day = date.fromisoformat(str(args.get("date", "")))
    except ValueError:
        return {"error": "date must be YYYY-MM-DD"}
    client = ctx.client
    name = str(args.get("service") or st.slots.get("service") or "")
    svc = next((s for s in client.services if s.name.casefold() == name.casefold()), None)
    minutes = svc.duration_minutes if svc else client.booking.slot_minutes
    avail = Availability(client, ctx.tools.calendar, ctx.now)
    if avail.hours(day) is None:
        return {"date": day.isoformat(), "open": False, "free_times": []}
    starts = await avail.free_slots(minutes, day=day, limit=8)
    return {
        "date": day.isoformat(),
        "day": format_day(day),
        "open": True,
        "free_times": [s.strftime("%H:%M") for s in starts],
        "shown_as": [format_short(s) for s in starts],
    }


async def understand(
    ctx: TurnContext, st: LeadState
) -> AsyncIterator[ToolCall | ToolResult | Understanding]:
    """Run the understanding tool loop on the turn's message; yields the
    read-only tool calls and results (they join the history), then the
    :class:`Understanding`. Raises LlmError (malformed when the model answers
    without a function call, calls one the flow does not know, or does not
    settle within :data:`MAX_ROUNDS`)."""
    llm = ctx.llm
    assert llm is not None
    system = _brief(ctx) + "\n\n" + _state_lines(ctx, st)
    messages = list(conversation(ctx.session.lines()))
    if not messages:
        messages = [LlmMessage("user", ctx.text)]
    for round_ in range(MAX_ROUNDS):
        result = await llm.generate(
            LlmRequest(
                system=system,
                messages=tuple(messages),
                tools=TOOLS,
                tool_mode="any",
                temperature=0.0,
                purpose="lead_capture",
            )
        )
        if not result.calls:
            raise llm.fail(LlmReason.MALFORMED, "understanding: no function call")
        reads = [c for c in result.calls if c.name == "check_availability"]
        acts = [c for c in result.calls if c.name != "check_availability"]
        if acts:
            try:
                yield Understanding.from_calls(acts)
            except ValueError as exc:
                raise llm.fail(LlmReason.MALFORMED, f"understanding: {exc}") from None
            return
        responses = []
        for n, call in enumerate(reads):
            call_id = call.id or f"llm-{round_}-{n}"
            yield ToolCall(call_id, call.name, {k: str(v) for k, v in (call.args or {}).items()})
            found = await _availability(ctx, st, call.args or {})
            yield ToolResult(call_id, call.name, result=found)
            responses.append(FunctionResponse(call.name, found, call.id))
        messages.append(LlmMessage("model", calls=result.calls))
        messages.append(LlmMessage("user", responses=tuple(responses)))
    raise llm.fail(LlmReason.MALFORMED, "understanding: the tool loop did not settle")


# -- phrasing ----------------------------------------------------------------------

_NUMBER = re.compile(r"\d+")
_EMAIL = re.compile(r"[^\s@]+@[^\s@]+\.[A-Za-z]{2,}")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[^\W\d_]+")
_STOP = frozenset(
    [
        "what",
        "which",
        "when",
        "where",
        "would",
        "could",
        "should",
        "shall",
        "your",
        "with",
        "have",
        "that",
        "this",
        "there",
        "like",
        "tell",
        "just",
        "about",
        "from",
        "them",
        "they",
        "then",
        "than",
        "more",
        "some",
        "please",
    ]
)


def _numbers(text: str) -> set[int]:
    """Numbers in ``text``, ignoring zero ("10:00" and "10 AM" agree)."""
    return {int(n) for n in _NUMBER.findall(_EMAIL.sub(" ", text)) if int(n) != 0}


def _emails(text: str) -> set[str]:
    return {e.rstrip(".").casefold() for e in _EMAIL.findall(text)}


@dataclass(slots=True)
class _Facts:
    """What a phrasing of ``draft`` must keep and may not add."""

    numbers: set[int]
    emails: set[str]
    names: set[str]
    question: bool
    asked: set[str]
    """Content words of the draft's last question ("name", "phone"...): a
    phrasing must ask about one of them, not something else."""

    @classmethod
    def of(cls, draft: str, ctx: TurnContext) -> _Facts:
        low = draft.casefold()
        names = {s.name.casefold() for s in ctx.client.services if s.name.casefold() in low}
        question = draft.rstrip().endswith("?")
        last = _SENTENCE_END.split(draft.strip())[-1] if question else ""
        asked = {w for w in _WORD.findall(last.casefold()) if len(w) >= 4} - _STOP
        return cls(_numbers(draft), _emails(draft), names, question, asked)

    def adds_nothing(self, sentence: str) -> bool:
        return _numbers(sentence) <= self.numbers and _emails(sentence) <= self.emails

    def kept(self, text: str) -> bool:
        low = text.casefold()
        return (
            self.numbers <= _numbers(text)
            and self.emails <= _emails(text)
            and all(name in low for name in self.names)
            and (not self.question or "?" in text)
            and (not self.asked or bool(self.asked & set(_WORD.findall(low))))
        )


def _phrasing_request(ctx: TurnContext, draft: str) -> LlmRequest:
    system = (
        _brief(ctx)
        + "\n\nYour job now: say the draft reply below to the customer in your own words, "
        "in the tone above, as one short message that follows naturally from the "
        "conversation. Keep every fact of the draft exactly (names, services, dates, "
        "times, prices, phone numbers, e-mails) and add no other fact, number or offer. "
        "If the draft asks a question, end with that question. Reply with the message "
        "only.\n\nDraft reply: " + json.dumps(draft, ensure_ascii=False)
    )
    messages = conversation(ctx.session.lines()) or (LlmMessage("user", ctx.text),)
    return LlmRequest(
        system=system,
        messages=messages,
        tool_mode="none",
        temperature=0.4,
        max_output_tokens=200,
        purpose="lead_capture",
    )


async def phrase(ctx: TurnContext, reply: AgentReply) -> AsyncIterator[TextDelta | Discard | str]:
    """Stream the flow's ``reply`` in the model's words: yields text deltas
    (whole sentences that passed the checks), a :class:`Discard` when streamed
    text must be withdrawn, and last the text actually sent (a ``str``: the
    phrasing, or the draft when the model failed or broke a fact). When the
    channel interrupts the turn (a barge-in), the model's stream is closed at
    once and nothing more is streamed."""
    draft = reply.text
    llm = ctx.llm
    if llm is None or not llm.available or not draft.strip():
        for piece in _pieces(draft):
            yield TextDelta(piece)
        yield draft
        return
    facts = _Facts.of(draft, ctx)
    said: list[str] = []
    pending = ""
    why: str | None = None  # why the wording is rejected
    try:
        async for chunk in llm.stream(_phrasing_request(ctx, draft)):
            if chunk.calls:
                why = "a function call instead of a wording"
                break
            pending += chunk.text
            *done, pending = _SENTENCE_END.split(pending)
            for sentence in done:
                if not facts.adds_nothing(sentence):
                    why = "a sentence added a fact"
                    break
                said.append(sentence)
                yield TextDelta((" " if len(said) > 1 else "") + sentence)
            if why:
                break
        if not why and pending.strip():
            if facts.adds_nothing(pending):
                said.append(pending.strip())
                yield TextDelta((" " if len(said) > 1 else "") + pending.strip())
            else:
                why = "a sentence added a fact"
    except LlmError as exc:
        if exc.reason == LlmReason.INTERRUPTED:
            # Nobody listens any more (a barge-in): stop here; the turn records
            # the flow's wording, and the channel what was actually heard.
            yield draft
            return
        why = ""  # the model failed: TurnModel recorded why
    text = " ".join(said).strip()
    if why is None and text and facts.kept(text):
        yield text
        return
    if why is None:
        why = "the wording dropped a fact or the question of the draft"
    if why:
        llm.fail(LlmReason.MALFORMED, f"phrasing: {why}")
    if said:
        yield Discard("rejected")
    for piece in _pieces(draft):
        yield TextDelta(piece)
    yield draft


def _pieces(text: str) -> list[str]:
    return chunk_text(text)
