"""A returning contact's details, offered back when a booking starts.

When the engine recognises the person (``ctx.contact``, :mod:`engine.contacts`:
the same phone number, WhatsApp id or widget visitor id as an earlier
conversation), the contact slots the client asks for (``name``, ``phone``,
``email`` in ``booking.rules.lead_fields``) are filled from what is on file
and said back once, so the flow does not ask for them again::

    Welcome back, Ana! I have +1 617-555-0101 and ana@example.com on file —
    I'll use those unless something changed.

The booking summary confirmed before booking lists them like any other slot,
and the customer may correct any of them at any time ("my email is now ..."),
as with values they typed.

On a call the e-mail on file is used but never read out ("your email on
file", also in the summary): caller ID can be spoofed, and reading a stored
address to whoever dials from a known number would disclose it. The number
is read digit by digit ("6 1 7, 5 5 5, 0 1 0 1"), as on every call.
"""

from __future__ import annotations

from engine.agents import TurnContext
from engine.phones import display_phone, say_phone
from purposes.lead_capture.slots import first_name
from purposes.lead_capture.state import LeadState

__all__ = ["CONTACT_SLOTS", "welcome_back"]

CONTACT_SLOTS = ("name", "phone", "email")


def welcome_back(ctx: TurnContext, st: LeadState) -> str:
    """Fill the empty contact slots from a returning contact and return the
    sentence that offers them back (ending in a space), or ``""`` when the
    contact is unknown, new in this conversation, or has nothing to offer."""
    contact = ctx.contact
    if contact is None or not contact.returning:
        return ""
    wanted = ctx.client.booking.rules.lead_fields
    on_file = {"name": contact.name, "phone": contact.phone, "email": contact.email}
    filled: dict[str, str] = {}
    for slot in CONTACT_SLOTS:
        value = on_file[slot]
        if slot in wanted and value and slot not in st.slots:
            st.slots[slot] = value
            filled[slot] = value
    if not filled:
        return ""
    name = first_name(filled.get("name", ""))
    text = f"Welcome back, {name}!" if name else "Welcome back!"
    on_call = ctx.session.channel == "phone"
    said = []
    if "phone" in filled:  # on a call, read back digit by digit, as every number is
        phone = filled["phone"]
        said.append(say_phone(phone, ctx.client.region) if on_call else display_phone(phone))
    if "email" in filled and on_call:
        st.unread.append("email")
        said.append("your email")
    elif "email" in filled:
        said.append(filled["email"])
    if said:
        text += (
            f" I have {' and '.join(said)} on file — I'll use "
            f"{'those' if len(said) > 1 else 'that'} unless something changed."
        )
    return text + " "
