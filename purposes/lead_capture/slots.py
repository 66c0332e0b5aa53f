"""Lead capture's working memory for one turn: slot extraction, validation,
acknowledgements, prompts and the booking summary.

:class:`SlotFiller` reads a message for every slot it can find (any order,
several at once, corrections), checks times against business hours and the
calendar, and collects what to say: acknowledgements of new values, the first
error (what was wrong and what to send instead) and quick replies.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import date, datetime, timedelta

from engine.agents import TurnContext
from engine.config import ClientConfig, Service
from engine.messages import QuickReply
from engine.phones import display_phone, say_phone
from purposes.lead_capture import email_by_text
from purposes.lead_capture.availability import Availability, format_day, format_short, format_when
from purposes.lead_capture.spoken import merge_name, say_email, spell, typed
from purposes.lead_capture.state import LeadState
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

__all__ = ["ASKS_OPTIONS", "SlotFiller", "caller_id", "first_name", "service_list"]

_E164 = re.compile(r"\+[1-9]\d{6,14}")


def caller_id(ctx: TurnContext) -> str | None:
    """The caller's number on a call, when it is a usable E.164 number."""
    number = ctx.session.context.caller_number
    if ctx.session.channel == "phone" and number and _E164.fullmatch(number):
        return number
    return None


def _model_when(day: str | None, clock: str | None) -> When | None:
    """A :class:`When` from a model's ``YYYY-MM-DD`` and ``HH:MM`` (24-hour),
    or None when either is malformed."""
    try:
        parsed_day = date.fromisoformat(day) if day else None
        if clock:
            hh, mm = clock.strip().split(":")[:2]
            hour, minute = int(hh), int(mm)
            if not (0 <= hour <= 23 and 0 <= minute <= 59):
                return None
            return When(day=parsed_day, hour=hour, minute=minute)
    except ValueError:
        return None
    return When(day=parsed_day) if parsed_day else None


ASKS_OPTIONS = re.compile(
    r"\b(available|availability|free|open|options|what times?|which times?|when can|earliest|soonest|"
    r"first available|next available|any time|anytime|whenever)\b",
    re.IGNORECASE,
)


def first_name(name: str) -> str:
    return name.split()[0] if name else ""


def service_list(services: tuple[Service, ...]) -> str:
    names = [s.name for s in services]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


class SlotFiller:
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
        self.voice = ctx.session.channel == "phone"
        """A call: spoken forms are read (``spoken.py``) and values read back."""

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
            if name == "email" and email_by_text.settled(self.st):
                continue  # to come by text message (email_by_text.py)
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
            name = first_name(self.st.slots.get("name", ""))
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
        if self.voice:  # "six one seven …", "m a r i a at example dot com"
            text = typed(text, expecting)
        rest = text
        wanted = set(self.fields)
        email, err, rest = find_email(rest, expecting == "email")
        if "email" in wanted:
            if email:
                self.set("email", email)
            elif err:
                self.fail(err)
        phone, err, rest = find_phone(rest, self.client.region, expecting == "phone")
        if "phone" in wanted:
            if phone:
                self.set("phone", phone)
                if st.caller_offer == "offered":
                    st.caller_offer = "declined"
            elif err:
                self.fail(err)
            elif expecting == "phone" and st.caller_offer == "offered":
                self.answer_caller_offer(text)
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
                        f"Did you mean {near.name}? We offer {service_list(self.client.services)}.",
                    )
                )
                choices.sort(key=lambda q: q.value != near.name)
            else:
                self.fail(
                    SlotError(
                        "service",
                        f"Sorry, we don't offer that. We offer {service_list(self.client.services)} — which would you like?",
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
                # "it's Lopez with a z": one word corrects that word of the name
                self.set("name", merge_name(st.slots.get("name"), name))
            elif expecting == "name" and not self.found and not self.errors:
                self.fail(
                    SlotError(
                        "name",
                        "Sorry, I didn't catch your name — could you type just your first and last name?",
                    )
                )
        if self.voice and expecting == "email" and "email" in wanted:
            self.email_not_read()
        if expecting == "time" and not self.found and not self.errors and not self.quick:
            await self.offer_times(asked=bool(ASKS_OPTIONS.search(text)))

    def email_not_read(self) -> None:
        """On a call, an answer to the email question that gave no address (and
        nothing else): ask for it spelled, and offer to text instead
        (``email_by_text.py``). Counted as one failure of the slot."""
        if self.found or any(e.slot != "email" for e in self.errors):
            return
        can_text = email_by_text.can_text(self.ctx, self.fields)
        message = email_by_text.RETRY if can_text else email_by_text.RETRY_NO_TEXT
        if self.errors:  # an address heard but malformed: already counted
            self.errors[0] = SlotError("email", message)
        else:
            self.fail(SlotError("email", message))
        if can_text:
            self.st.email_by_text = "offered"

    def answer_caller_offer(self, text: str) -> None:
        """The answer to the caller-ID offer (:meth:`prompt`): yes takes the
        number the call comes from, no asks for another one."""
        number = caller_id(self.ctx)
        if number is not None and is_yes(text):
            self.st.caller_offer = "accepted"
            self.set("phone", number)
            if self.acks and self.ack_slots[-1:] == ["phone"]:
                self.acks[-1] = "Great, I'll use the number you're calling from."
        elif is_no(text):
            self.st.caller_offer = "declined"

    async def apply(self, given: Mapping[str, str], text: str) -> None:
        """Take slot values a language model read in the message (``given``:
        ``service``, ``name``, ``phone``, ``email``, ``date`` ``YYYY-MM-DD``,
        ``time`` ``HH:MM``, ``notes``), each checked exactly as if the customer
        had typed it when asked for that slot. A value that fails is not
        written: the slot's error asks for it again (``text``: the message, for
        the "what times are free?" offer)."""
        wanted = set(self.fields)
        if self.voice:
            given = {
                k: typed(v, k) if k in ("phone", "email", "name") else v for k, v in given.items()
            }
        if "email" in given and "email" in wanted:
            email, err, _rest = find_email(given["email"], True)
            if email:
                self.set("email", email)
            else:
                self.fail(err or SlotError("email", "Sorry, that email doesn't look right."))
        if "phone" in given and "phone" in wanted:
            phone, err, _rest = find_phone(given["phone"], self.client.region, True)
            if phone:
                self.set("phone", phone)
            else:
                self.fail(err or SlotError("phone", "Sorry, that number doesn't look right."))
        if "service" in given and "service" in wanted:
            svc, _score, _near = find_service(given["service"], self.client.services)
            if svc is None:
                self.quick = [QuickReply(title=s.name, value=s.name) for s in self.client.services]
                self.fail(
                    SlotError(
                        "service",
                        f"Sorry, we don't offer that. We offer {service_list(self.client.services)} — which would you like?",
                    )
                )
            else:
                changed = self.st.slots.get("service") not in (None, svc.name)
                self.set("service", svc.name)
                if changed and "time" in self.st.slots and not ({"date", "time"} & set(given)):
                    await self.revalidate_time()
        if ({"date", "time"} & set(given)) and "time" in wanted:
            when = _model_when(given.get("date"), given.get("time"))
            if when is None:
                self.fail(
                    SlotError(
                        "time",
                        "I didn't catch a day and time — could you say something like “Friday at 10:30”?",
                    )
                )
            else:
                await self.interpret_when(when)
        if "name" in given and "name" in wanted:
            name = find_name(given["name"], expecting=True)
            if name:
                self.set("name", name)
            else:
                self.fail(
                    SlotError(
                        "name",
                        "Sorry, I didn't catch your name — could you type just your first and last name?",
                    )
                )
        if "notes" in given and "notes" in wanted:
            self.set("notes", given["notes"][:500])
        if self.voice and self.st.expecting == "email" and "email" in wanted:
            self.email_not_read()
        if (
            self.st.expecting == "time"
            and not self.found
            and not self.errors
            and not self.quick
            and not given
        ):
            await self.offer_times(asked=bool(ASKS_OPTIONS.search(text)))

    def set(self, slot: str, value: str) -> None:
        old = self.st.slots.get(slot)
        self.st.slots[slot] = value
        self.found.add(slot)
        self.st.failures.pop(slot, None)
        if slot in self.st.unread:
            self.st.unread.remove(slot)
        if slot == "email":
            self.st.email_by_text = None  # said after all: no text needed
        if slot == "time":
            self.st.pending_day = None
        if old == value:
            return
        self.ack_slots.append(slot)
        if slot == "name":
            self.acks.append(
                f"Thanks, {first_name(value)}."
                if old is None
                else f"I've changed your name to {value}."
            )
        elif slot == "phone" and self.voice:  # read back digit by digit
            said = say_phone(value, self.client.region)
            self.acks.append(
                f"Got your number: {said}."
                if old is None
                else f"I've updated your number to {said}."
            )
        elif slot == "phone":
            self.acks.append(
                "Got your number."
                if old is None
                else f"I've updated your number to {display_phone(value)}."
            )
        elif slot == "email" and self.voice:  # read back spelled
            said = say_email(value)
            self.acks.append(
                f"Got your email: {said}." if old is None else f"I've updated your email to {said}."
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
            number = caller_id(self.ctx)
            if number is not None and self.st.caller_offer in (None, "offered"):
                self.st.caller_offer = "offered"
                digits = re.sub(r"\D", "", number)
                return (
                    f"Is the number you're calling from, ending {digits[-4:]}, "
                    "the best one to reach you?"
                )
            if self.voice and self.st.caller_offer == "declined":
                return "What's the best number to reach you?"
            return "What's the best phone number to reach you?"
        if slot == "email":
            return email_by_text.PROMPT if self.voice else "What's your email address?"
        if slot == "service":
            self.quick = [QuickReply(title=s.name, value=s.name) for s in client.services]
            return f"Which service would you like? We offer {service_list(client.services)}."
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
            surname = s["name"].split()[-1]
            if (
                self.voice
                and len(s["name"].split()) > 1
                and surname.isascii()
                and surname.isalpha()
            ):
                who[-1] += f", that's {spell(surname)}"
        contact = []
        if "phone" in s:
            shown = say_phone(s["phone"], self.client.region) if self.voice else None
            contact.append(f"phone {shown or display_phone(s['phone'])}")
        if "email" in s:
            unread = "email" in self.st.unread and self.voice
            shown = say_email(s["email"]) if self.voice else s["email"]
            contact.append("email on file" if unread else f"email {shown}")
        elif email_by_text.settled(self.st):
            contact.append(email_by_text.SUMMARY)
        line = " ".join(parts + who)
        if contact:
            line += " — " + ", ".join(contact)
        start = datetime.fromisoformat(s["time"]) if "time" in s else None
        approval = self.avail.approval_needed(start, s.get("service", ""))
        if approval is not None:  # booking.approval: the team confirms it first
            return (
                f"Here's what I have: {line}. This one needs the team's OK ({approval.message})"
                " — shall I ask them?"
            )
        return f"Here's what I have: {line}. Shall I book it?"
