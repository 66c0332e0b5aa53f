"""Lead capture: an explicit state machine that fills slots, confirms, books and records.

States (see ``FLOW.md`` beside this file for the diagram):

- ``collecting``: asks for ``booking.rules.lead_fields`` in order, but takes
  whatever the user volunteers in any message (several slots at once, any
  order) and accepts corrections at any time ("actually my email is …").
- ``confirming``: one summary; *yes* books, *no* asks what to change, a
  message with new values applies them and confirms again.
- ``booked``: the booking and the lead are requested as effects, which the
  engine commits atomically with the turn; hands back.
- ``handoff``: the user asked for a person (or gave up after repeated
  failures): collects a callback number, records a ``callback_requested``
  lead, asks the engine to notify the business (Slack/email per the client's
  ``escalation`` config) and hands back with an ``escalated`` action.
- ``closed``: the user called it off.

Each reply is one message: what was understood, what was wrong (and what to
send instead) or the next question. After three failures on one slot the flow
offers a human.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, Field

from engine.agents import Agent, AgentReply, Handback, TurnContext
from engine.config import ClientConfig, Service
from engine.messages import Action, QuickReply
from engine.router import wants_human
from engine.tools import Lead
from purposes.lead_capture.availability import Availability, format_day, format_short, format_when
from purposes.lead_capture.validators import (
    SlotError,
    When,
    find_email,
    find_name,
    find_phone,
    find_service,
    find_when,
    is_no,
    is_yes,
)

__all__ = ["LeadCaptureAgent", "LeadState", "Stage"]

MAX_FAILURES = 3
CONFIRMATION = "confirmation"


class Stage(StrEnum):
    COLLECTING = "collecting"
    CONFIRMING = "confirming"
    HANDOFF = "handoff"
    BOOKED = "booked"
    CLOSED = "closed"


class LeadState(BaseModel):
    """The flow's state, kept in ``session.purpose_state["lead_capture"]``."""

    stage: Stage = Stage.COLLECTING
    slots: dict[str, str] = Field(default_factory=dict)
    expecting: str | None = None
    failures: dict[str, int] = Field(default_factory=dict)
    pending_day: str | None = None
    """ISO date the user named without a clock time yet."""
    choices: list[str] = Field(default_factory=list)
    """Values of the last quick replies, so "2" picks the second one."""
    human_offered: bool = False
    started: bool = False
    booking_id: str | None = None
    lead_id: str | None = None


_CANCEL = re.compile(
    r"^\s*(cancel( that| it| this)?|never ?mind|forget it|stop|quit|i changed my mind|not interested)\b",
    re.IGNORECASE,
)
_BOOKING_AGAIN = re.compile(
    r"\b(book|booking|appointment|another|schedule|reserve)\b", re.IGNORECASE
)
_THANKS = re.compile(
    r"\b(thanks|thank you|thx|bye|goodbye|great|perfect|awesome|cool|ok|okay)\b", re.IGNORECASE
)
_ASKS_OPTIONS = re.compile(
    r"\b(available|availability|free|open|options|what times?|which times?|when can|earliest|soonest|"
    r"first available|next available|any time|anytime|whenever)\b",
    re.IGNORECASE,
)
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


def _first_name(name: str) -> str:
    return name.split()[0] if name else ""


def _service_list(services: tuple[Service, ...]) -> str:
    names = [s.name for s in services]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def _display_phone(e164: str) -> str:
    import phonenumbers

    try:
        return phonenumbers.format_number(
            phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        return e164


class _Turn:
    """Working memory for one turn: accumulates acknowledgements and errors."""

    def __init__(self, ctx: TurnContext, state: LeadState) -> None:
        self.ctx = ctx
        self.client: ClientConfig = ctx.client
        self.st = state
        self.now_local = ctx.now.astimezone(self.client.tz)
        self.avail = Availability(self.client, ctx.tools.calendar, ctx.now)
        self.acks: list[str] = []
        self.ack_slots: list[str] = []
        self.errors: list[SlotError] = []
        self.quick: list[QuickReply] = []
        self.found: set[str] = set()

    # -- helpers -------------------------------------------------------------
    @property
    def fields(self) -> tuple[str, ...]:
        return self.client.booking.rules.lead_fields

    def service(self) -> Service | None:
        name = self.st.slots.get("service")
        return self.client.service(name) if name else None

    def minutes(self) -> int:
        svc = self.service()
        return svc.duration_minutes if svc else self.client.booking.slot_minutes

    def missing(self) -> str | None:
        for name in self.fields:
            if name not in self.st.slots:
                return name
        return None

    def slot_replies(self, starts: list[datetime]) -> list[QuickReply]:
        return [
            QuickReply(
                title=format_short(s),
                value=f"{s.strftime('%b')} {s.day} at {s.strftime('%I:%M %p').lstrip('0')}",
            )
            for s in starts
        ]

    def ack(self) -> str:
        """One acknowledgement: each new value in field order, or a short thanks
        when three or more arrived at once (the summary repeats them anyway)."""
        if len(self.acks) >= 3:
            name = _first_name(self.st.slots.get("name", ""))
            return f"Thanks{', ' + name if name else ''} — got all that."
        order = {slot: i for i, slot in enumerate(self.fields)}
        paired = sorted(
            zip(self.ack_slots, self.acks, strict=False), key=lambda p: order.get(p[0], 99)
        )
        extra = self.acks[len(self.ack_slots) :]
        return " ".join([a for _, a in paired] + extra)

    def fail(self, error: SlotError) -> None:
        self.errors.append(error)
        self.st.failures[error.slot] = self.st.failures.get(error.slot, 0) + 1

    # -- extraction ----------------------------------------------------------
    async def extract(self, text: str) -> None:
        st, expecting = self.st, self.st.expecting
        rest = text
        wanted = set(self.fields)
        email, err, rest = find_email(rest, expecting == "email")
        if "email" in wanted:
            if email:
                self.set("email", email)
            elif err:
                self.fail(err)
        phone, err, rest = find_phone(rest, self.client.region, expecting == "phone")
        if "phone" in wanted or st.stage == Stage.HANDOFF:
            if phone:
                self.set("phone", phone)
            elif err:
                self.fail(err)
        when, rest = find_when(rest, self.now_local)
        svc, _score, near = find_service(rest, self.client.services)
        if svc and "service" in wanted:
            changed = st.slots.get("service") not in (None, svc.name)
            self.set("service", svc.name)
            if changed and "time" in st.slots and when is None:
                await self.revalidate_time()
        elif expecting == "service" and when is None and not self.found:
            choices = [QuickReply(title=s.name, value=s.name) for s in self.client.services]
            if near is not None:
                self.fail(
                    SlotError(
                        "service",
                        f"Did you mean {near.name}? We offer {_service_list(self.client.services)}.",
                    )
                )
                choices.sort(key=lambda q: q.value != near.name)
            else:
                self.fail(
                    SlotError(
                        "service",
                        f"Sorry, we don't offer that. We offer {_service_list(self.client.services)} — which would you like?",
                    )
                )
            self.quick = choices
        if when is not None and "time" in wanted:
            await self.interpret_when(when)
        if "name" in wanted:
            explicit = find_name(text, expecting=False)
            bare_ok = (
                expecting == "name" and not ({"service", "time"} & self.found) and when is None
            )
            # A message of one to three words that each open with a capital, or
            # with a letter of a script without case (王伟, محمد علي), is taken as
            # a name; find_name then checks the words themselves.
            said = text.strip()
            words = (said[:-1] if said.endswith((".", "!")) else said).split()
            volunteered = (
                "name" not in st.slots
                and not self.found
                and when is None
                and svc is None
                and 0 < len(words) <= 3
                and all(w[0].isalpha() and not w[0].islower() for w in words)
            )
            name = explicit or (find_name(rest, expecting=True) if bare_ok or volunteered else None)
            if name:
                self.set("name", name)
            elif expecting == "name" and not self.found and not self.errors:
                self.fail(
                    SlotError(
                        "name",
                        "Sorry, I didn't catch your name — could you type just your first and last name?",
                    )
                )
        if expecting == "time" and not self.found and not self.errors and not self.quick:
            await self.offer_times(asked=bool(_ASKS_OPTIONS.search(text)))

    def set(self, slot: str, value: str) -> None:
        old = self.st.slots.get(slot)
        self.st.slots[slot] = value
        self.found.add(slot)
        self.st.failures.pop(slot, None)
        if slot == "time":
            self.st.pending_day = None
        if old == value:
            return
        self.ack_slots.append(slot)
        if slot == "name":
            self.acks.append(
                f"Thanks, {_first_name(value)}."
                if old is None
                else f"I've changed your name to {value}."
            )
        elif slot == "phone":
            self.acks.append(
                "Got your number."
                if old is None
                else f"I've updated your number to {_display_phone(value)}."
            )
        elif slot == "email":
            self.acks.append(
                "Got your email." if old is None else f"I've updated your email to {value}."
            )
        elif slot == "service":
            svc = self.client.service(value)
            detail = (
                f" ({svc.duration_minutes} min"
                + (f", ${svc.price:g})" if svc and svc.price is not None else ")")
                if svc
                else ""
            )
            self.acks.append(
                f"{value}{detail} it is."
                if old is None
                else f"I've changed the service to {value}{detail}."
            )
        elif slot == "time":
            when = format_when(datetime.fromisoformat(value))
            self.acks.append(f"{when} is free." if old is None else f"I've moved it to {when}.")

    async def revalidate_time(self) -> None:
        start = datetime.fromisoformat(self.st.slots["time"])
        problem = await self.avail.problem(start, self.minutes(), self.st.slots.get("service", ""))
        if problem is not None:
            del self.st.slots["time"]
            alternatives = await self.avail.free_slots(self.minutes(), near=start)
            self.fail(
                SlotError("time", f"{problem.message} {self._alternatives_text(alternatives)}")
            )
            self.st.failures["time"] -= 1  # not the user's mistake
            self.quick = self.slot_replies(alternatives)

    def _alternatives_text(self, alternatives: list[datetime]) -> str:
        if not alternatives:
            return "I couldn't find a free time near that — could you suggest another day?"
        listed = ", ".join(format_short(a) for a in alternatives)
        return f"The nearest free times are {listed}. Pick one, or tell me another time."

    def _default_day(self, hour: int, minute: int, ambiguous: bool) -> date:
        day = self.now_local.date()
        for _ in range(14):
            dt = self.avail.resolve_hour(day, hour, minute, ambiguous)
            opening = self.avail.hours(day)
            if opening and dt >= self.avail.earliest and opening[0] <= dt < opening[1]:
                return day
            day += timedelta(days=1)
        return self.now_local.date()

    async def interpret_when(self, when: When) -> None:
        st = self.st
        existing = (
            datetime.fromisoformat(st.slots["time"]).astimezone(self.client.tz)
            if "time" in st.slots
            else None
        )
        pending = date.fromisoformat(st.pending_day) if st.pending_day else None
        minutes, service_name = self.minutes(), st.slots.get("service", "")
        if when.has_clock:
            assert when.hour is not None
            day = when.day or pending or (existing.date() if existing else None)
            day = day or self._default_day(when.hour, when.minute, when.ambiguous)
            start = self.avail.resolve_hour(day, when.hour, when.minute, when.ambiguous)
        elif when.part is not None:
            day = (
                when.day
                or pending
                or (existing.date() if existing else None)
                or self.now_local.date()
            )
            window = when.window()
            starts = await self.avail.free_slots(minutes, day=day, window=window)
            if starts:
                self.set("time", starts[0].isoformat())
                self.acks[-1] = (
                    f"The first free time {format_day(day)} {when.part} is {format_short(starts[0]).split(', ')[1]}."
                )
                return
            opening = self.avail.hours(day)
            reason = (
                f"We're closed on {day.strftime('%A')}s."
                if opening is None
                else f"There's nothing free {format_day(day)} {when.part}."
            )
            alternatives = await self.avail.free_slots(
                minutes,
                near=datetime.combine(
                    day, window[0] if window else datetime.min.time(), self.client.tz
                ),
            )
            self.fail(SlotError("time", f"{reason} {self._alternatives_text(alternatives)}"))
            self.quick = self.slot_replies(alternatives)
            return
        else:
            assert when.day is not None
            if existing is not None:
                start = datetime.combine(when.day, existing.time(), self.client.tz)
            else:
                await self.ask_time_on(when.day)
                return
        problem = await self.avail.problem(start, minutes, service_name)
        if problem is None:
            self.set("time", start.isoformat())
            return
        alternatives = await self.avail.free_slots(minutes, near=start)
        self.fail(SlotError("time", f"{problem.message} {self._alternatives_text(alternatives)}"))
        self.quick = self.slot_replies(alternatives)

    async def ask_time_on(self, day: date) -> None:
        minutes = self.minutes()
        opening = self.avail.hours(day)
        starts = await self.avail.free_slots(minutes, day=day, limit=6) if opening else []
        if starts:
            self.st.pending_day = day.isoformat()
            self.found.add("day")
            shown = ", ".join(format_short(s).split(", ")[1] for s in starts[:4])
            self.acks.append(f"What time on {format_day(day)}? Free times include {shown}.")
            self.quick = self.slot_replies(starts[:4])
            return
        reason = (
            f"We're closed on {day.strftime('%A')}s (we're open {self.avail.open_days()})."
            if opening is None
            else f"{format_day(day)} is fully booked or too soon."
        )
        alternatives = await self.avail.free_slots(
            minutes,
            near=datetime.combine(
                day, opening[0].time() if opening else datetime.min.time(), self.client.tz
            )
            if opening
            else datetime.combine(day, datetime.min.time().replace(hour=10), self.client.tz),
        )
        self.fail(SlotError("time", f"{reason} {self._alternatives_text(alternatives)}"))
        self.quick = self.slot_replies(alternatives)

    async def offer_times(self, *, asked: bool) -> None:
        starts = await self.avail.free_slots(self.minutes())
        listed = ", ".join(format_short(s) for s in starts)
        if asked:
            self.found.add("day")
            self.acks.append(
                f"The next free times are {listed}. Which would you like?"
                if starts
                else "I couldn't find a free time in the next two weeks — could you suggest a day?"
            )
        else:
            self.fail(
                SlotError(
                    "time",
                    "I didn't catch a day and time — you can say something like “tomorrow at 3pm” or "
                    f"“Friday 10:30”, or pick one of these: {listed}."
                    if starts
                    else "I didn't catch a day and time — could you say something like “Friday at 10:30”?",
                )
            )
        self.quick = self.slot_replies(starts)

    # -- prompts ---------------------------------------------------------------
    async def prompt(self, slot: str) -> str:
        client = self.client
        if slot == "name":
            return "May I have your name?"
        if slot == "phone":
            return "What's the best phone number to reach you?"
        if slot == "email":
            return "What's your email address?"
        if slot == "service":
            self.quick = [QuickReply(title=s.name, value=s.name) for s in client.services]
            return f"Which service would you like? We offer {_service_list(client.services)}."
        if slot == "time":
            if self.st.pending_day:
                day = date.fromisoformat(self.st.pending_day)
                starts = await self.avail.free_slots(self.minutes(), day=day, limit=4)
                self.quick = self.slot_replies(starts)
                return f"What time on {format_day(day)} works for you?"
            starts = await self.avail.free_slots(self.minutes())
            self.quick = self.slot_replies(starts)
            return "When would you like to come in? Pick one of these or tell me a day and time."
        return "Is there anything you'd like us to know before your visit?"

    def summary(self) -> str:
        s = self.st.slots
        parts: list[str] = []
        svc = self.service()
        if "service" in s:
            detail = (
                f" ({svc.duration_minutes} min"
                + (f", ${svc.price:g})" if svc and svc.price is not None else ")")
                if svc
                else ""
            )
            parts.append(f"a {s['service']}{detail}")
        if "time" in s:
            parts.append(f"on {format_when(datetime.fromisoformat(s['time']))}")
        who = []
        if "name" in s:
            who.append(f"for {s['name']}")
        contact = []
        if "phone" in s:
            contact.append(f"phone {_display_phone(s['phone'])}")
        if "email" in s:
            contact.append(f"email {s['email']}")
        line = " ".join(parts + who)
        if contact:
            line += " — " + ", ".join(contact)
        return f"Here's what I have: {line}. Shall I book it?"


class LeadCaptureAgent(Agent):
    """The lead-capture purpose. Stateless: all state lives in the session."""

    purpose = "lead_capture"

    async def handle(self, ctx: TurnContext) -> AgentReply:
        raw = ctx.session.purpose_state.get(self.purpose)
        state = LeadState.model_validate(raw) if raw else LeadState()
        if state.stage in (Stage.BOOKED, Stage.CLOSED) and self._wants_new_booking(ctx):
            keep = {k: v for k, v in state.slots.items() if k in ("name", "phone", "email")}
            state = LeadState(slots=keep, started=True)
        reply = await self._step(ctx, state)
        ctx.session.purpose_state[self.purpose] = state.model_dump(mode="json")
        return reply

    @staticmethod
    def _wants_new_booking(ctx: TurnContext) -> bool:
        text = ctx.message.text
        return (
            bool(_BOOKING_AGAIN.search(text))
            or find_service(text, ctx.client.services)[0] is not None
        )

    def _reply(self, turn: _Turn, text: str, **kw: object) -> AgentReply:
        st = turn.st
        quick = tuple(turn.quick)
        st.choices = [q.value for q in quick]
        st.expecting = kw.pop("expecting", st.expecting)  # type: ignore[assignment]
        return AgentReply(
            text=text,
            quick_replies=quick,
            expecting=st.expecting,
            slots=dict(st.slots),
            state=st.stage.value,
            booking_id=st.booking_id,
            lead_id=st.lead_id,
            **kw,  # type: ignore[arg-type]
        )

    async def _step(self, ctx: TurnContext, st: LeadState) -> AgentReply:
        text = ctx.message.text.strip()
        if re.fullmatch(r"\d", text) and st.choices and st.expecting != "phone":
            index = int(text) - 1
            if 0 <= index < len(st.choices):
                text = st.choices[index]
        turn = _Turn(ctx, st)

        if st.stage in (Stage.BOOKED, Stage.CLOSED):
            if st.stage == Stage.BOOKED and _THANKS.search(text):
                when = (
                    format_when(datetime.fromisoformat(st.slots["time"]))
                    if "time" in st.slots
                    else ""
                )
                return self._reply(
                    turn,
                    f"You're welcome! See you {('on ' + when) if when else 'soon'}.",
                    expecting=None,
                    handback=Handback("done"),
                )
            else:
                return self._reply(turn, "", expecting=None, handback=Handback("out_of_scope"))

        if _CANCEL.match(text) and st.stage != Stage.HANDOFF:
            st.stage = Stage.CLOSED
            return self._reply(
                turn,
                "No problem, I've stopped the booking. If you change your mind, just say you'd like to book.",
                expecting=None,
                handback=Handback("done"),
            )

        if st.stage == Stage.HANDOFF or wants_human(text):
            return await self._handoff(turn, text)

        if (
            "?" in text
            and not re.search(r"\d|@", text)
            and "support" in ctx.available_purposes
            and st.stage != Stage.CONFIRMING
            and not _ASKS_OPTIONS.search(text)
        ):
            # A question mid-booking goes to support; this flow's state stays for later.
            return self._reply(turn, "", handback=Handback("out_of_scope"))

        if st.stage == Stage.CONFIRMING:
            await turn.extract(text)
            if not turn.found and not turn.errors:
                if is_yes(text):
                    return await self._book(turn)
                target = next(
                    (
                        slot
                        for slot, rx in _CHANGE.items()
                        if rx.search(text) and slot in turn.fields
                    ),
                    None,
                )
                if target is not None:
                    st.slots.pop(target, None)
                    st.stage = Stage.COLLECTING
                    st.expecting = target
                    return self._reply(turn, await turn.prompt(target), expecting=target)
                if is_no(text) or not text:
                    turn.quick = [
                        QuickReply(
                            title=f"Change {_FIELD_TITLES[f].lower()}", value=f"change the {f}"
                        )
                        for f in turn.fields
                    ]
                    return self._reply(
                        turn, "No problem — what would you like to change?", expecting=CONFIRMATION
                    )
                turn.quick = [
                    QuickReply(title="Yes, book it", value="yes"),
                    QuickReply(title="Change something", value="no"),
                ]
                return self._reply(
                    turn, "Sorry, I didn't follow. " + turn.summary(), expecting=CONFIRMATION
                )
            st.stage = Stage.COLLECTING

        opening = "" if st.started else "I'd be happy to help you book. "
        st.started = True
        await turn.extract(text)
        ack = turn.ack()
        if turn.errors:
            error = turn.errors[0]
            message = error.message
            if st.failures.get(error.slot, 0) >= MAX_FAILURES:
                message += (
                    " If you'd rather, someone from the team can call you back to finish this."
                )
                turn.quick.append(
                    QuickReply(
                        title="Have someone call me", value="Please have someone call me back"
                    )
                )
                st.human_offered = True
            body = f"{ack} {message}".strip()
            return self._reply(turn, opening + body, expecting=error.slot)
        missing = turn.missing()
        if missing is not None:
            if "day" in turn.found and missing == "time":
                return self._reply(turn, opening + ack, expecting="time")
            question = await turn.prompt(missing)
            return self._reply(
                turn, f"{opening}{ack} {question}".replace("  ", " ").strip(), expecting=missing
            )
        problem_free = await self._recheck(turn)
        if not problem_free:
            error = turn.errors[0]
            return self._reply(turn, f"{opening}{ack} {error.message}".strip(), expecting="time")
        st.stage = Stage.CONFIRMING
        turn.quick = [
            QuickReply(title="Yes, book it", value="yes"),
            QuickReply(title="Change something", value="no"),
        ]
        return self._reply(turn, f"{opening}{ack} {turn.summary()}".strip(), expecting=CONFIRMATION)

    async def _recheck(self, turn: _Turn) -> bool:
        if "time" not in turn.st.slots or "time" in turn.found:
            return True
        await turn.revalidate_time()
        return "time" in turn.st.slots

    async def _book(self, turn: _Turn) -> AgentReply:
        """Request the booking and the lead; the engine's commit writes both or
        neither (and runs this turn again if the slot was taken meanwhile)."""
        st, client, effects = turn.st, turn.client, turn.ctx.effects
        if not await self._recheck(turn):
            st.stage = Stage.COLLECTING
            return self._reply(turn, turn.errors[0].message, expecting="time")
        booking_id: str | None = None
        start = end = None
        if "time" in st.slots:
            start = datetime.fromisoformat(st.slots["time"])
            end = start + timedelta(minutes=turn.minutes())
            booking_id = effects.book(
                start, end, st.slots.get("service", ""), st.slots.get("name", "")
            )
        st.booking_id = booking_id
        lead = Lead(
            client_id=client.client_id,
            channel=turn.ctx.session.channel,
            session_id=turn.ctx.session.session_id,
            fields=dict(st.slots),
            status="booked" if booking_id else "new",
            booking_id=booking_id,
            service=st.slots.get("service"),
            start=start.isoformat() if start else None,
            end=end.isoformat() if end else None,
        )
        st.lead_id = effects.record_lead(lead, dict(client.crm.map))
        st.stage = Stage.BOOKED
        name = _first_name(st.slots.get("name", ""))
        if start is not None:
            text = (
                f"You're booked! {st.slots.get('service', 'Your appointment')} on {format_when(start)}. "
                f"We look forward to seeing you{', ' + name if name else ''}."
            )
        else:
            text = f"Thank you{', ' + name if name else ''}! The team will be in touch shortly."
        return self._reply(
            turn,
            text,
            expecting=None,
            actions=(Action(type="booked", target=booking_id),) if booking_id else (),
            handback=Handback("done"),
            outcome="booked" if booking_id else "lead",
        )

    async def _handoff(self, turn: _Turn, text: str) -> AgentReply:
        st = turn.st
        if st.stage != Stage.HANDOFF:
            st.stage = Stage.HANDOFF
            st.expecting = "phone"
        phone, _err, _rest = find_phone(text, turn.client.region, expecting=True)
        if phone:
            turn.set("phone", phone)
        name = find_name(text, expecting=False)
        if name:
            turn.set("name", name)
        callback = st.slots.get("phone") or turn.ctx.session.context.caller_number
        if not callback:
            return self._reply(
                turn,
                "Of course — I'll ask someone from the team to call you back. What's the best phone number to reach you?",
                expecting="phone",
            )
        st.slots.setdefault("phone", callback)
        lead = Lead(
            client_id=turn.client.client_id,
            channel=turn.ctx.session.channel,
            session_id=turn.ctx.session.session_id,
            fields=dict(st.slots),
            status="callback_requested",
            service=st.slots.get("service"),
        )
        effects = turn.ctx.effects
        st.lead_id = effects.record_lead(lead, dict(turn.client.crm.map))
        effects.escalate(
            "asked for a person" if not st.human_offered else "needed help to finish a booking",
            who=st.slots.get("name"),
            contact=callback,
            email=st.slots.get("email"),
            fields=dict(st.slots),
        )
        st.stage = Stage.CLOSED
        actions: tuple[Action, ...] = (Action(type="escalated"),)
        transfer_to = turn.client.escalation.phone_transfer_number
        if turn.ctx.session.channel == "phone" and transfer_to:
            actions += (Action(type="transfer", target=transfer_to),)
            text_out = "Let me connect you with someone from the team now."
        else:
            text_out = (
                f"Done — someone from {turn.client.name} will call you back at "
                f"{_display_phone(callback)} as soon as they can."
            )
        return self._reply(
            turn,
            text_out,
            expecting=None,
            actions=actions,
            handback=Handback("escalated"),
            outcome="escalated",
        )
