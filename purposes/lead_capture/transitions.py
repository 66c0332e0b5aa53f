"""Lead capture's transitions, as a table (see ``FLOW.md`` beside this file).

Each user message runs the first :class:`Transition` whose stage matches and
whose guard holds; its action returns the reply, or None to let the next
transitions run (``new_booking`` resets the state, then ``collect`` runs).
The names here are the ones in FLOW.md's diagram and table.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from engine.agents import AgentReply, Handback, HandbackStatus, HandoffRequest, TurnContext
from engine.config import Service
from engine.messages import Action, QuickReply
from engine.router import is_cancel, is_question, wants_human
from engine.tools import Lead
from purposes.lead_capture import approval, email_by_text
from purposes.lead_capture.availability import format_when
from purposes.lead_capture.llm import Understanding
from purposes.lead_capture.returning import welcome_back
from purposes.lead_capture.slots import ASKS_OPTIONS, SlotFiller, first_name
from purposes.lead_capture.spoken import typed
from purposes.lead_capture.state import CONFIRMATION, LeadState, Stage
from purposes.lead_capture.validators import find_email, find_service, find_when, is_no, is_yes

__all__ = ["MAX_FAILURES", "TRANSITIONS", "Step", "Transition", "resume_prompt"]

MAX_FAILURES = 3
"""Failures on one slot after which the flow offers a person."""

BOOKING_WORDS = re.compile(
    r"\b(book|booking|appointment|appt|another|schedule|reserve|reservation)\b", re.IGNORECASE
)
_THANKS = re.compile(
    r"\b(thanks|thank you|thx|bye|goodbye|great|perfect|awesome|cool|ok|okay)\b", re.IGNORECASE
)
_ASKS = re.compile(
    r"^\s*(where|what|when|how|why|who|which|is|are|do|does|can|could)\b", re.IGNORECASE
)
_ALSO = re.compile(r"\b(also|too|as well|another|second|plus|in addition)\b", re.IGNORECASE)
_CHANGE = {
    "name": re.compile(r"\bname\b", re.IGNORECASE),
    "phone": re.compile(r"\b(phone|number|mobile|cell)\b", re.IGNORECASE),
    "email": re.compile(r"\b(e-?mail)\b", re.IGNORECASE),
    "service": re.compile(r"\b(service|treatment)\b", re.IGNORECASE),
    "time": re.compile(r"\b(time|date|day|when)\b", re.IGNORECASE),
}
_FIELD_TITLES = {
    "name": "Name",
    "phone": "Phone",
    "email": "Email",
    "service": "Service",
    "time": "Time",
    "notes": "Notes",
}
_CONFIRM_CHOICES = [
    QuickReply(title="Yes, book it", value="yes"),
    QuickReply(title="Change something", value="no"),
]
_CONTACT = ("name", "phone", "email")


@dataclass(slots=True)
class Step:
    """One message's run through the table: the context, the flow's state, the
    message text (a digit picks a quick reply) and the slot filler."""

    ctx: TurnContext
    st: LeadState
    text: str
    filler: SlotFiller
    understood: Understanding | None = None
    """What a language model read in the message (``llm.py``), or None: the
    rules read it."""
    _extracted: bool = field(default=False)

    @classmethod
    def start(
        cls, ctx: TurnContext, st: LeadState, understood: Understanding | None = None
    ) -> Step:
        text = ctx.message.text.strip()
        if re.fullmatch(r"\d", text) and st.choices and st.expecting != "phone":
            index = int(text) - 1
            if 0 <= index < len(st.choices):
                text = st.choices[index]
        if ctx.session.channel == "phone":  # spoken forms as typed, for every guard
            text = typed(text, st.expecting)
        return cls(ctx, st, text, SlotFiller(ctx, st), understood)

    def act(self, *acts: str) -> bool | None:
        """Whether the model's reading is one of ``acts``; None when the rules read."""
        return None if self.understood is None else self.understood.act in acts

    async def extract(self) -> SlotFiller:
        """The filler after reading the message (once per step): the model's
        values validated like typed input, else the rules' extraction."""
        if not self._extracted:
            self._extracted = True
            if self.understood is not None:
                await self.filler.apply(self.understood.slots, self.text)
            else:
                await self.filler.extract(self.text)
        return self.filler

    def renew(self, st: LeadState) -> None:
        """Continue this step on a fresh state (a new booking)."""
        self.st = st
        self.filler = SlotFiller(self.ctx, st)
        self._extracted = False

    def reply(self, text: str, **kw: object) -> AgentReply:
        st = self.st
        quick = tuple(self.filler.quick)
        st.choices = [q.value for q in quick]
        st.expecting = kw.pop("expecting", st.expecting)  # type: ignore[assignment]
        data = {k: v for k, v in (("booking_id", st.booking_id), ("lead_id", st.lead_id)) if v}
        return AgentReply(
            text=text,
            quick_replies=quick,
            expecting=st.expecting,
            slots=dict(st.slots),
            state=st.stage.value,
            metadata=data,
            **kw,  # type: ignore[arg-type]
        )


Guard = Callable[[Step], Awaitable[bool]]
Action_ = Callable[[Step], Awaitable[AgentReply | None]]


@dataclass(frozen=True, slots=True)
class Transition:
    name: str
    stages: frozenset[Stage]
    guard: Guard
    action: Action_


# -- guards ------------------------------------------------------------------------


async def _always(step: Step) -> bool:
    return True


async def _wants_new_booking(step: Step) -> bool:
    if step.act("update") and step.understood and (step.understood.slots or step.understood.also):
        return True
    return bool(BOOKING_WORDS.search(step.text)) or (
        find_service(step.text, step.ctx.client.services)[0] is not None
    )


async def _thanks(step: Step) -> bool:
    return bool(_THANKS.search(step.text))


async def _cancel(step: Step) -> bool:
    by_model = step.act("cancel")
    return is_cancel(step.text) if by_model is None else by_model


async def _asks_for_person(step: Step) -> bool:
    by_model = step.act("person")
    return wants_human(step.text) if by_model is None else by_model


def _also_service(step: Step) -> Service | None:
    """A further service the message asks to book ("can I also book a
    manicure?"), not the current one nor one already queued."""
    current = step.st.slots.get("service")
    if current is None:
        return None
    services = step.ctx.client.services
    if step.understood is not None:
        if step.understood.slots.get("service") not in (None, current):
            return None  # a change of service, not a second one
        named = (find_service(value, services)[0] for value in step.understood.also)
        candidates = [svc for svc in named if svc is not None]
    elif _ALSO.search(step.text):
        svc = find_service(step.text, services)[0]
        candidates = [svc] if svc is not None else []
    else:
        candidates = []
    return next((s for s in candidates if s.name != current and s.name not in step.st.queued), None)


async def _wants_email_by_text(step: Step) -> bool:
    """On a call, the email question answered with "text me", "send me a link",
    "skip" (or "yes" to the retry's offer to text), and no address."""
    st, ctx = step.st, step.ctx
    if (
        ctx.session.channel != "phone"
        or st.expecting != "email"
        or "email" in st.slots
        or "email" not in step.filler.fields
        or not email_by_text.can_text(ctx, step.filler.fields)
    ):
        return False
    if find_email(step.text, True)[0] is not None:
        return False
    return email_by_text.chose_text(step.text, st)


async def _another_service(step: Step) -> bool:
    return _also_service(step) is not None


async def _unrelated_question(step: Step) -> bool:
    """A question that gives nothing this flow can use ("do you have parking?")."""
    by_model = step.act("other")
    if by_model is not None:
        return by_model and is_question(step.text)
    text, client = step.text, step.ctx.client
    if not is_question(text) or re.search(r"\d|@", text) or ASKS_OPTIONS.search(text):
        return False
    if len(text.split()) < 3 and not _ASKS.match(text):
        return False  # "Maria Lopez?" is an unsure answer, not another topic
    if BOOKING_WORDS.search(text) or is_yes(text) or is_no(text):
        return False
    if step.st.stage == Stage.CONFIRMING and any(rx.search(text) for rx in _CHANGE.values()):
        return False
    if find_service(text, client.services)[0] is not None:
        return False
    when, _rest = find_when(text, step.filler.now_local)
    return when is None


async def _plain_yes(step: Step) -> bool:
    filler = await step.extract()
    said_yes = step.act("confirm")
    said_yes = is_yes(step.text) if said_yes is None else said_yes
    return not filler.found and not filler.errors and said_yes


def _field_named(step: Step) -> str | None:
    fields = step.filler.fields
    if step.understood is not None:
        change = step.understood.change if step.understood.act == "change" else None
        return change if change in fields else None
    return next((s for s, rx in _CHANGE.items() if rx.search(step.text) and s in fields), None)


async def _names_a_field(step: Step) -> bool:
    filler = await step.extract()
    return not filler.found and not filler.errors and _field_named(step) is not None


async def _plain_no(step: Step) -> bool:
    filler = await step.extract()
    said_no = step.act("change")
    said_no = (is_no(step.text) or not step.text) if said_no is None else said_no
    return not filler.found and not filler.errors and said_no


async def _nothing_understood(step: Step) -> bool:
    filler = await step.extract()
    return not filler.found and not filler.errors


# -- actions -----------------------------------------------------------------------


def _by_text(st: LeadState) -> str | None:
    """The email-by-text marker a next booking keeps with the contact details."""
    return st.email_by_text if email_by_text.settled(st) else None


async def _start_new_booking(step: Step) -> AgentReply | None:
    keep = {k: v for k, v in step.st.slots.items() if k in _CONTACT}
    step.renew(LeadState(slots=keep, started=True, email_by_text=_by_text(step.st)))
    return None


async def _say_welcome(step: Step) -> AgentReply:
    slots = step.st.slots
    when = format_when(datetime.fromisoformat(slots["time"])) if "time" in slots else ""
    return step.reply(
        f"You're welcome! See you {('on ' + when) if when else 'soon'}.",
        expecting=None,
        handback=Handback(HandbackStatus.COMPLETED, summary="thanked after booking"),
    )


async def _not_mine(step: Step) -> AgentReply:
    return step.reply("", expecting=None, handoff=HandoffRequest(None, reason="journey over"))


async def _close(step: Step) -> AgentReply:
    step.st.stage = Stage.CLOSED
    step.st.queued.clear()
    return step.reply(
        "No problem, I've stopped the booking. If you change your mind, just say you'd like to book.",
        expecting=None,
        handback=Handback(HandbackStatus.FAILED, summary="the customer called the booking off"),
    )


async def _escalate(step: Step) -> AgentReply:
    st = step.st
    st.stage = Stage.CLOSED
    reason = "needed help to finish a booking" if st.human_offered else "asked for a person"
    handoff = step.ctx.escalate(reason, **st.slots).handoff
    return step.reply("", expecting=None, handoff=handoff)  # the human agent answers


async def _queue_service(step: Step) -> AgentReply:
    st, filler = step.st, step.filler
    svc = _also_service(step)
    assert svc is not None
    st.queued.append(svc.name)
    ack = f"Sure — I'll book the {svc.name} for you right after this one."
    if st.stage == Stage.CONFIRMING:
        filler.quick = list(_CONFIRM_CHOICES)
        return step.reply(f"{ack} First, {_lower_first(filler.summary())}", expecting=CONFIRMATION)
    return step.reply(f"{ack} {await _where_we_are(filler)}")


async def _suspend_for_question(step: Step) -> AgentReply:
    return step.reply(
        "", handoff=HandoffRequest(None, reason="question during a booking", suspend=True)
    )


async def _book(step: Step) -> AgentReply:
    """Request the booking and the lead; the engine's commit writes both or
    neither (and runs this turn again if the slot was taken meanwhile)."""
    st, filler = step.st, step.filler
    client, effects = step.ctx.client, step.ctx.effects
    if not await _recheck(filler):
        st.stage = Stage.COLLECTING
        return step.reply(filler.errors[0].message, expecting="time")
    if await approval.needed(step):  # booking.approval: a person confirms it first
        return await approval.request(step, _next_booking)
    booking_id: str | None = None
    start = end = None
    if "time" in st.slots:
        start = datetime.fromisoformat(st.slots["time"])
        end = start + timedelta(minutes=filler.minutes())
        booking_id = effects.book(start, end, st.slots.get("service", ""), st.slots.get("name", ""))
    st.booking_id = booking_id
    fields = dict(st.slots)
    marker = email_by_text.lead_marker(step.ctx, st)
    if marker is not None:  # no email: it comes by text (email_by_text.py)
        fields["email_by_text"] = marker
    lead = Lead(
        client_id=client.client_id,
        channel=step.ctx.session.channel,
        session_id=step.ctx.session.session_id,
        fields=fields,
        status="booked" if booking_id else "new",
        booking_id=booking_id,
        service=st.slots.get("service"),
        start=start.isoformat() if start else None,
        end=end.isoformat() if end else None,
    )
    st.lead_id = effects.record_lead(lead, dict(client.crm.map))
    before = st.email_by_text
    email_by_text.request(step.ctx, st, booking_id or st.lead_id, start)
    st.stage = Stage.BOOKED
    name = first_name(st.slots.get("name", ""))
    if start is not None:
        text = (
            f"You're booked! {st.slots.get('service', 'Your appointment')} on {format_when(start)}. "
            f"We look forward to seeing you{', ' + name if name else ''}."
        )
    else:
        text = f"Thank you{', ' + name if name else ''}! The team will be in touch shortly."
    if before != st.email_by_text:  # just settled: say how the email will come
        text += " " + (
            email_by_text.TEXTED if st.email_by_text == "texted" else email_by_text.NOTED
        )
    actions = (Action(type="booked", target=booking_id),) if booking_id else ()
    outcome = "booked" if booking_id else "lead"
    if st.queued:
        return await _next_booking(step, text, actions, outcome)
    return step.reply(
        text,
        expecting=None,
        actions=actions,
        handback=Handback(HandbackStatus.COMPLETED, summary=outcome),
        outcome=outcome,
    )


async def _next_booking(
    step: Step, done_text: str, actions: tuple[Action, ...], outcome: str
) -> AgentReply:
    """Start the next queued service with the same contact details."""
    st = step.st
    booked = {"booking_id": st.booking_id, "lead_id": st.lead_id}
    keep = {k: v for k, v in st.slots.items() if k in _CONTACT}
    service, *rest = st.queued
    step.renew(
        LeadState(
            slots={**keep, "service": service},
            started=True,
            queued=rest,
            email_by_text=_by_text(st),
        )
    )
    filler = step.filler
    missing = filler.missing()
    question = await filler.prompt(missing) if missing else filler.summary()
    if missing is None:
        step.st.stage = Stage.CONFIRMING
        filler.quick = list(_CONFIRM_CHOICES)
    reply = step.reply(
        f"{done_text} Now for your {service}: {_lower_first(question)}",
        expecting=missing or CONFIRMATION,
        actions=actions,
        outcome=outcome,
    )
    return replace(reply, metadata={k: v for k, v in booked.items() if v})


async def _reopen_field(step: Step) -> AgentReply:
    st, target = step.st, _field_named(step)
    assert target is not None
    st.slots.pop(target, None)
    if target == "email":
        st.email_by_text = None  # asked for again, said this time
    st.stage = Stage.COLLECTING
    st.expecting = target
    return step.reply(await step.filler.prompt(target), expecting=target)


async def _ask_what_to_change(step: Step) -> AgentReply:
    step.filler.quick = [
        QuickReply(title=f"Change {_FIELD_TITLES[f].lower()}", value=f"change the {f}")
        for f in step.filler.fields
    ]
    return step.reply("No problem — what would you like to change?", expecting=CONFIRMATION)


async def _repeat_summary(step: Step) -> AgentReply:
    step.filler.quick = list(_CONFIRM_CHOICES)
    return step.reply("Sorry, I didn't follow. " + step.filler.summary(), expecting=CONFIRMATION)


async def _take_email_by_text(step: Step) -> AgentReply:
    """The email is to come by text: settled; on to the next question."""
    st, filler = step.st, step.filler
    st.email_by_text = "requested"
    st.failures.pop("email", None)
    st.stage = Stage.COLLECTING
    missing = filler.missing()
    if missing is not None:
        question = await filler.prompt(missing)
        return step.reply(f"{email_by_text.ACK} {question}", expecting=missing)
    if not await _recheck(filler):
        return step.reply(f"{email_by_text.ACK} {filler.errors[0].message}", expecting="time")
    st.stage = Stage.CONFIRMING
    filler.quick = list(_CONFIRM_CHOICES)
    return step.reply(f"{email_by_text.ACK} {filler.summary()}", expecting=CONFIRMATION)


async def _collect(step: Step) -> AgentReply:
    """Take every value the message gives; answer with the first problem, the
    next question, or the summary to confirm."""
    st = step.st
    st.stage = Stage.COLLECTING
    # A returning contact's details are filled and offered back once (returning.py).
    opening = "" if st.started else welcome_back(step.ctx, st) + "I'd be happy to help you book. "
    st.started = True
    filler = await step.extract()
    ack = filler.ack()
    if filler.errors:
        error = filler.errors[0]
        message = error.message
        if st.failures.get(error.slot, 0) >= MAX_FAILURES:
            message += " If you'd rather, someone from the team can call you back to finish this."
            filler.quick.append(
                QuickReply(title="Have someone call me", value="Please have someone call me back")
            )
            st.human_offered = True
        return step.reply(f"{opening}{ack} {message}".strip(), expecting=error.slot)
    missing = filler.missing()
    if missing is not None:
        if "day" in filler.found and missing == "time":
            return step.reply(opening + ack, expecting="time")
        question = await filler.prompt(missing)
        return step.reply(
            f"{opening}{ack} {question}".replace("  ", " ").strip(), expecting=missing
        )
    if not await _recheck(filler):
        error = filler.errors[0]
        return step.reply(f"{opening}{ack} {error.message}".strip(), expecting="time")
    st.stage = Stage.CONFIRMING
    filler.quick = list(_CONFIRM_CHOICES)
    return step.reply(f"{opening}{ack} {filler.summary()}".strip(), expecting=CONFIRMATION)


async def _recheck(filler: SlotFiller) -> bool:
    """Is the chosen time (if not given in this very message) still free?"""
    if "time" not in filler.st.slots or "time" in filler.found:
        return True
    await filler.revalidate_time()
    return "time" in filler.st.slots


async def _where_we_are(filler: SlotFiller) -> str:
    """The question the flow is waiting on (its last prompt, asked again)."""
    if filler.st.stage == Stage.CONFIRMING:
        filler.quick = list(_CONFIRM_CHOICES)
        return filler.summary()
    slot = filler.st.expecting if filler.st.expecting in filler.fields else filler.missing()
    return await filler.prompt(slot) if slot else filler.summary()


async def resume_prompt(ctx: TurnContext, st: LeadState) -> AgentReply | None:
    """Where a suspended booking was, asked again; None when it is over."""
    if st.stage not in (Stage.COLLECTING, Stage.CONFIRMING):
        return None
    step = Step(ctx, st, "", SlotFiller(ctx, st))
    question = await _where_we_are(step.filler)
    expecting = CONFIRMATION if st.stage == Stage.CONFIRMING else st.expecting
    return step.reply(f"Now, back to your booking: {_lower_first(question)}", expecting=expecting)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[:2] != "I " and text[:2] != "I'" else text


_OPEN = frozenset({Stage.COLLECTING, Stage.CONFIRMING})
_OVER = frozenset({Stage.BOOKED, Stage.CLOSED})
_CONFIRMING = frozenset({Stage.CONFIRMING})
_AWAITING = frozenset({Stage.AWAITING_APPROVAL})

TRANSITIONS: tuple[Transition, ...] = (
    Transition("new_booking", _OVER, _wants_new_booking, _start_new_booking),
    Transition("thanks", frozenset({Stage.BOOKED}), _thanks, _say_welcome),
    Transition("not_mine", _OVER, _always, _not_mine),
    Transition("legacy_handoff", frozenset({Stage.HANDOFF}), _always, _escalate),
    Transition("withdraw", _AWAITING, _cancel, approval.withdraw),
    Transition("awaiting_question", _AWAITING, _unrelated_question, _not_mine),
    Transition("awaiting", _AWAITING, _always, approval.still_waiting),
    Transition("email_by_text", _OPEN, _wants_email_by_text, _take_email_by_text),
    Transition("cancel", _OPEN, _cancel, _close),
    Transition("ask_for_person", _OPEN, _asks_for_person, _escalate),
    Transition("another_service", _OPEN, _another_service, _queue_service),
    Transition("interruption", _OPEN, _unrelated_question, _suspend_for_question),
    Transition("confirm_yes", _CONFIRMING, _plain_yes, _book),
    Transition("confirm_change", _CONFIRMING, _names_a_field, _reopen_field),
    Transition("confirm_no", _CONFIRMING, _plain_no, _ask_what_to_change),
    Transition("confirm_unclear", _CONFIRMING, _nothing_understood, _repeat_summary),
    Transition("collect", _OPEN, _always, _collect),
)
"""In order: the first whose stage matches and whose guard holds runs."""
