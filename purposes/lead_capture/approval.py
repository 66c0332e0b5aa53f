"""Bookings a person at the business approves first (``booking.approval``).

A client marks bookings outside its usual rules — ``services`` that always
need an OK, starts sooner than ``within_hours`` (asked for instead of refused
by ``min_notice_hours``) — and the flow, instead of booking on the customer's
*yes* (``confirm_yes`` in ``transitions.py``), in one turn commit:

1. **holds** the slot (a ``held`` booking: busy for every other customer,
   released if the answer is no),
2. records a **pending approval request** (:mod:`engine.approvals`) with a
   deadline: ``timeout_minutes`` from now, never past the booking's start,
3. sends staff a **notice** through the escalation routes (Slack webhook,
   email, via the outbox) with the approve/decline call to make,
4. tells the customer it asked the team and will message them here
   (stage ``awaiting_approval``).

The decision arrives through the admin API or the timeout sweeper
(:mod:`engine.decisions`), which calls :func:`decide`:

- **approve**: the hold becomes the booking and a ``booked`` lead is recorded
  (exactly once); the customer is told they are booked. If the hold is gone
  and the slot taken meanwhile, the customer is told so and offered the
  nearest free times (the flow goes back to asking for a time).
- **decline**: a polite no (with staff's ``note`` quoted when given), a
  ``declined`` lead, and the offer to pick another time.
- **expire** (nobody decided in time) applies ``fallback``: ``decline`` as
  above, or ``take_message``: a ``callback_requested`` lead, a notice to staff
  to call back, and "the team will call you back" to the customer.

While waiting, "cancel" withdraws the request (the hold is released); a
question goes to the router; anything else gets "still waiting".

Channels: on the web the decision's message is pushed to the open widget;
on the phone (the caller has hung up) it is recorded and the notice asks
staff to call the customer back with the answer; WhatsApp messages are
recorded until the WhatsApp sender exists (a later step).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from engine.agents import AgentReply, Handback, HandbackStatus, TurnContext
from engine.approvals import Approval, Decision, Settlement, settlement_for
from engine.messages import Action, QuickReply
from engine.phones import display_phone
from engine.tools import Lead
from purposes.lead_capture import email_by_text
from purposes.lead_capture.availability import Availability, format_short, format_when
from purposes.lead_capture.slots import first_name
from purposes.lead_capture.state import LeadState, Stage

if TYPE_CHECKING:
    from purposes.lead_capture.transitions import Step

__all__ = ["decide", "needed", "request", "still_waiting", "withdraw"]

PURPOSE = "lead_capture"
_LEAD_FIELDS = ("name", "phone", "email", "service", "time", "notes")

Continue = Callable[["Step", str, tuple[Action, ...], str], Awaitable[AgentReply]]
"""What ``_book`` does after a booking when more services are queued."""


def _start(slots: dict[str, str]) -> datetime | None:
    return datetime.fromisoformat(slots["time"]) if "time" in slots else None


def _what(service: str, start: datetime | None) -> str:
    """``your Deep Tissue Massage on Friday, November 27 at 10:30 AM``."""
    thing = f"your {service}" if service else "your appointment"
    return f"{thing} on {format_when(start)}" if start else thing


async def needed(step: Step) -> bool:
    """Does the booking the customer just confirmed need a person's OK?"""
    st = step.st
    return (
        step.filler.avail.approval_needed(_start(st.slots), st.slots.get("service", "")) is not None
    )


async def request(step: Step, then: Continue) -> AgentReply:
    """Hold the slot, record the approval request, notify staff, tell the
    customer (see the module docstring); ``then`` starts a queued service."""
    st, filler, ctx = step.st, step.filler, step.ctx
    client, effects = ctx.client, ctx.effects
    rules = client.booking.approval
    service, name = st.slots.get("service", ""), st.slots.get("name", "")
    start = _start(st.slots)
    why = filler.avail.approval_needed(start, service)
    assert why is not None
    details = {k: v for k, v in st.slots.items() if k in _LEAD_FIELDS}
    hold_id = None
    deadline = ctx.now + timedelta(minutes=rules.timeout_minutes)
    if start is not None:
        end = start + timedelta(minutes=filler.minutes())
        hold_id = effects.book(start, end, service, name, hold=True)
        details |= {"start": start.isoformat(), "end": end.isoformat()}
        deadline = min(deadline, start)
    if email_by_text.settled(st):  # no email: staff and the lead see it comes by text
        details["email_by_text"] = "requested"
    on_phone = ctx.session.channel == "phone"
    if on_phone:
        details["answer_by"] = "phone call (the customer was on the phone)"
    summary = f"{service or 'Appointment'}"
    summary += f" on {format_when(start)}" if start else ""
    summary += f" for {name}" if name else ""
    st.approval_id = effects.request_approval(
        PURPOSE,
        summary,
        why.message,
        details,
        hold_id=hold_id,
        fallback=rules.fallback,
        created_ts=ctx.now.timestamp(),
        deadline_ts=deadline.timestamp(),
        who=name or None,
        contact=st.slots.get("phone"),
        email=st.slots.get("email"),
    )
    st.stage = Stage.AWAITING_APPROVAL
    st.booking_id = None
    first = first_name(name)
    held = " I'm holding the time for you meanwhile." if hold_id else ""
    if on_phone and st.slots.get("phone"):
        after = (
            f"They'll call you at {display_phone(st.slots['phone'])} as soon as they've decided."
        )
    else:
        after = "I'll message you here as soon as they do."
    text = (
        f"Thanks{', ' + first if first else ''}! {_what(service, start)[0].upper()}"
        f"{_what(service, start)[1:]} needs the team's OK ({why.message}), so I've asked them "
        f"to confirm it.{held} {after}"
    )
    outcome = "approval_requested"
    if st.queued:
        return await then(step, text, (), outcome)
    reply = step.reply(text, expecting=None, outcome=outcome)
    return replace(reply, metadata={**reply.metadata, "approval_id": st.approval_id})


async def still_waiting(step: Step) -> AgentReply:
    """Any message while waiting: where things stand."""
    st = step.st
    start = _start(st.slots)
    thanks = "You're welcome! " if _THANKS_WORDS & set(step.text.lower().split()) else ""
    return step.reply(
        f"{thanks}I'm still waiting for the team to confirm {_what(st.slots.get('service', ''), start)}"
        " — I'll let you know here as soon as they do. If you'd rather not wait, say cancel.",
        expecting=None,
    )


_THANKS_WORDS = frozenset({"thanks", "thank", "thx", "ty", "great", "ok", "okay", "cool"})


async def withdraw(step: Step) -> AgentReply:
    """The customer calls it off while waiting: the request is withdrawn and
    the held time released (nothing is booked, no lead)."""
    st, ctx = step.st, step.ctx
    if st.approval_id is not None:
        ctx.effects.settle_approval(
            Settlement(st.approval_id, "withdrawn", "customer", "withdrawn", ctx.now.timestamp())
        )
    st.stage = Stage.CLOSED
    st.approval_id = None
    st.queued.clear()
    return step.reply(
        "No problem — I've withdrawn the request and let the time go. "
        "If you'd like another time, just say you'd like to book.",
        expecting=None,
        handback=Handback(HandbackStatus.FAILED, summary="the customer withdrew the booking"),
    )


# -- decisions (engine.decisions calls these through LeadCaptureAgent.decide) -------


async def decide(
    ctx: TurnContext, st: LeadState, approval: Approval, decision: Decision, note: str | None
) -> tuple[AgentReply, LeadState]:
    """Turn ``decision`` into effects and the customer's message; returns the
    reply and the flow's state after (changed only if it was waiting on this
    request)."""
    details = approval.details
    slots = {k: details[k] for k in _LEAD_FIELDS if k in details}
    waiting = st.stage == Stage.AWAITING_APPROVAL and st.approval_id == approval.approval_id
    now_ts = ctx.now.timestamp()
    if decision == "approve":
        return await _approved(ctx, st, approval, slots, waiting, note)
    if decision == "withdraw":
        ctx.effects.settle_approval(
            settlement_for(decision, approval, outcome="withdrawn", now_ts=now_ts)
        )
        return AgentReply(text="", state=st.stage.value), st
    if decision == "expire" and approval.fallback == "take_message":
        return _take_message(ctx, st, approval, slots, waiting)
    return await _declined(ctx, st, approval, slots, waiting, decision, note)


def _lead(
    ctx: TurnContext, approval: Approval, slots: dict[str, str], status: str, **kw: str | None
) -> str:
    details, client = approval.details, ctx.client
    fields = dict(slots)
    if "email_by_text" in details:
        fields["email_by_text"] = details["email_by_text"]
    lead = Lead(
        client_id=client.client_id,
        channel=approval.channel,
        session_id=approval.session_id,
        fields=fields,
        status=status,
        booking_id=kw.get("booking_id"),
        service=slots.get("service"),
        start=details.get("start"),
        end=details.get("end"),
    )
    return ctx.effects.record_lead(lead, dict(client.crm.map))


def _note(note: str | None) -> str:
    note = " ".join((note or "").split())
    return f" The team says: “{note[:300]}”" if note else ""


async def _approved(
    ctx: TurnContext,
    st: LeadState,
    approval: Approval,
    slots: dict[str, str],
    waiting: bool,
    note: str | None,
) -> tuple[AgentReply, LeadState]:
    client, effects, details = ctx.client, ctx.effects, approval.details
    service, name = slots.get("service", ""), slots.get("name", "")
    start = datetime.fromisoformat(details["start"]) if "start" in details else None
    end = datetime.fromisoformat(details["end"]) if "end" in details else None
    now_ts = ctx.now.timestamp()
    booking_id: str | None = None
    if start is not None and end is not None:
        busy = await ctx.tools.calendar.busy(client.client_id, start, end)
        if any(b.booking_id == approval.hold_id for b in busy):
            booking_id = approval.hold_id  # the hold becomes the booking in the commit
        elif not busy:
            booking_id = effects.book(start, end, service, name)  # hold gone, slot still free
        else:
            return await _taken(ctx, st, approval, slots, waiting, start)
    lead_id = _lead(ctx, approval, slots, "booked" if booking_id else "new", booking_id=booking_id)
    effects.settle_approval(
        settlement_for(
            "approve",
            approval,
            outcome="booked" if booking_id else "lead",
            now_ts=now_ts,
            note=note,
            result={"booking_id": booking_id, "lead_id": lead_id},
            confirm_hold=booking_id is not None and booking_id == approval.hold_id,
        )
    )
    first = first_name(name)
    text = (
        f"Good news{', ' + first if first else ''}: the team confirmed {_what(service, start)}."
        f" You're booked — we look forward to seeing you!{_note(note)}"
    )
    if waiting:
        st = st.model_copy(
            update={"stage": Stage.BOOKED, "booking_id": booking_id, "lead_id": lead_id}
        )
    actions = (Action(type="booked", target=booking_id),) if booking_id else ()
    data = {k: v for k, v in (("booking_id", booking_id), ("lead_id", lead_id)) if v}
    return (
        AgentReply(
            text=text,
            actions=actions,
            slots=slots,
            state=Stage.BOOKED.value,
            outcome="booked" if booking_id else "lead",
            handback=Handback(HandbackStatus.COMPLETED, summary="booked after approval"),
            metadata=data,
        ),
        st,
    )


async def _other_times(
    ctx: TurnContext, st: LeadState, slots: dict[str, str], near: datetime | None, waiting: bool
) -> tuple[str, LeadState, tuple[QuickReply, ...]]:
    """The nearest free times (the usual rules), and the state asking for a time."""
    from purposes.lead_capture.slots import SlotFiller

    if not waiting:
        return " If you'd like another time, just say you'd like to book.", st, ()
    fresh = LeadState(
        slots={k: v for k, v in slots.items() if k != "time"},
        stage=Stage.COLLECTING,
        started=True,
        expecting="time",
    )
    filler = SlotFiller(ctx, fresh)
    avail = Availability(ctx.client, ctx.tools.calendar, ctx.now)
    starts = await avail.free_slots(filler.minutes(), near=near) if near else []
    quick = tuple(filler.slot_replies(starts))
    fresh.choices = [q.value for q in quick]
    if starts:
        listed = ", ".join(format_short(s) for s in starts)
        return (
            f" The nearest free times are {listed} — pick one, or tell me another time.",
            fresh,
            quick,
        )
    return " Would you like to try another day and time?", fresh, quick


async def _taken(
    ctx: TurnContext,
    st: LeadState,
    approval: Approval,
    slots: dict[str, str],
    waiting: bool,
    start: datetime,
) -> tuple[AgentReply, LeadState]:
    ctx.effects.settle_approval(
        settlement_for("approve", approval, outcome="slot_taken", now_ts=ctx.now.timestamp())
    )
    more, after, quick = await _other_times(ctx, st, slots, start, waiting)
    text = (
        f"The team said yes to {_what(slots.get('service', ''), start)}, but that time was "
        f"taken in the meantime — I'm sorry.{more}"
    )
    return (
        AgentReply(
            text=text,
            quick_replies=quick,
            expecting=after.expecting if waiting else None,
            slots=dict(after.slots),
            state=after.stage.value,
        ),
        after,
    )


async def _declined(
    ctx: TurnContext,
    st: LeadState,
    approval: Approval,
    slots: dict[str, str],
    waiting: bool,
    decision: Decision,
    note: str | None,
) -> tuple[AgentReply, LeadState]:
    details = approval.details
    start = datetime.fromisoformat(details["start"]) if "start" in details else None
    lead_id = _lead(ctx, approval, slots, "declined")
    ctx.effects.settle_approval(
        settlement_for(
            decision,
            approval,
            outcome="declined",
            now_ts=ctx.now.timestamp(),
            note=note,
            result={"lead_id": lead_id},
        )
    )
    first = first_name(slots.get("name", ""))
    what = _what(slots.get("service", ""), start)
    if decision == "expire":
        said = f"the team couldn't confirm {what} in time, so I can't book it."
    else:
        said = f"the team can't confirm {what}.{_note(note)}"
    more, after, quick = await _other_times(ctx, st, slots, start, waiting)
    return (
        AgentReply(
            text=f"I'm sorry{', ' + first if first else ''} — {said}{more}",
            quick_replies=quick,
            expecting=after.expecting if waiting else None,
            slots=dict(after.slots),
            state=after.stage.value,
            outcome="declined",
            metadata={"lead_id": lead_id},
        ),
        after,
    )


def _take_message(
    ctx: TurnContext, st: LeadState, approval: Approval, slots: dict[str, str], waiting: bool
) -> tuple[AgentReply, LeadState]:
    details = approval.details
    start = datetime.fromisoformat(details["start"]) if "start" in details else None
    lead_id = _lead(ctx, approval, slots, "callback_requested")
    phone = slots.get("phone")
    ctx.effects.escalate(
        f"asked for {approval.summary}; nobody approved it in time: please call back",
        who=slots.get("name"),
        contact=phone,
        email=slots.get("email"),
        fields=dict(slots),
    )
    ctx.effects.settle_approval(
        settlement_for(
            "expire",
            approval,
            outcome="callback",
            now_ts=ctx.now.timestamp(),
            result={"lead_id": lead_id},
        )
    )
    first = first_name(slots.get("name", ""))
    back = f" at {display_phone(phone)}" if phone else ""
    text = (
        f"Sorry for the wait{', ' + first if first else ''} — the team hasn't been able to "
        f"confirm {_what(slots.get('service', ''), start)} yet, so I've passed your request on: "
        f"someone will call you back{back} to arrange it."
    )
    if waiting:
        st = st.model_copy(update={"stage": Stage.CLOSED, "approval_id": None, "lead_id": lead_id})
    return (
        AgentReply(
            text=text,
            slots=slots,
            state=Stage.CLOSED.value,
            outcome="callback_requested",
            handback=Handback(HandbackStatus.ESCALATE, summary="approval timed out"),
            metadata={"lead_id": lead_id},
        ),
        st,
    )
