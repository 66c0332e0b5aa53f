"""Phone numbers in free text, shared by every agent (the number a person can
be called back on): found, displayed and read aloud. Uses ``phonenumbers``;
values are E.164. (Returning contacts are :mod:`engine.contacts`.)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers

__all__ = ["SlotError", "display_phone", "find_phone", "say_phone"]


@dataclass(frozen=True, slots=True)
class SlotError:
    """A value the user gave for ``slot`` that is not valid; ``message`` says
    what was wrong and what to send instead (no other user data)."""

    slot: str
    message: str


_PHONE_CANDIDATE = re.compile(r"(?<![\w:])\+?\(?\d[\d\s().-]{4,}\d(?![\w:])")
_DATE_LIKE = re.compile(r"\b\d{4}-\d{1,2}-\d{1,2}\b|\b\d{1,2}/\d{1,2}(?:/\d{2,4})?\b")


def find_phone(text: str, region: str, expecting: bool) -> tuple[str | None, SlotError | None, str]:
    """Find a phone number; return it as E.164 (``+14155550134``).

    A digit run that looks like a phone number but is not valid for the region
    gives an error asking for the full number with area code.
    """
    for match in phonenumbers.PhoneNumberMatcher(
        text, region, leniency=phonenumbers.Leniency.VALID
    ):
        e164 = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        rest = text[: match.start] + " " + text[match.end :]
        return e164, None, rest
    scrubbed = _DATE_LIKE.sub(" ", text)
    for cand in _PHONE_CANDIDATE.finditer(scrubbed):
        digits = re.sub(r"\D", "", cand.group(0))
        if len(digits) >= 7 or (expecting and len(digits) >= 5):
            try:
                number = phonenumbers.parse(cand.group(0), region)
                if phonenumbers.is_valid_number(number):
                    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
                    return e164, None, text.replace(cand.group(0), " ")
            except phonenumbers.NumberParseException:
                pass
            example = _example_number(region)
            return (
                None,
                SlotError(
                    "phone",
                    f"“{cand.group(0).strip()}” isn't a complete phone number. "
                    f"Please send it with the area code, like {example}.",
                ),
                text.replace(cand.group(0), " "),
            )
    if expecting and re.search(r"\d", text) and not re.search(r"[a-z]{3,}", text, re.IGNORECASE):
        return (
            None,
            SlotError(
                "phone",
                f"Please send a phone number with the area code, like {_example_number(region)}.",
            ),
            text,
        )
    return None, None, text


def _example_number(region: str) -> str:
    if region == "US":
        return "(415) 555-0134"
    example = phonenumbers.example_number(region)
    if example is None:
        return "+1 415 555 0134"
    return phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.NATIONAL)


def display_phone(e164: str) -> str:
    """``+14155550134`` as people write it (``+1 415-555-0134``)."""
    try:
        return phonenumbers.format_number(
            phonenumbers.parse(e164), phonenumbers.PhoneNumberFormat.INTERNATIONAL
        )
    except phonenumbers.NumberParseException:
        return e164


def say_phone(e164: str, region: str) -> str:
    """``+16175550147`` as read back on a call, digit by digit in the groups
    people say: ``"6 1 7, 5 5 5, 0 1 4 7"`` (a number of ``region`` in its
    national form, another with its country code: ``"plus 4 4, 2 0, 7 9 4 6,
    0 9 5 8"``)."""
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return " ".join(ch for ch in e164 if ch.isdigit())
    home = phonenumbers.region_code_for_number(number) == region
    shown = phonenumbers.format_number(
        number,
        phonenumbers.PhoneNumberFormat.NATIONAL
        if home
        else phonenumbers.PhoneNumberFormat.INTERNATIONAL,
    )
    groups = [" ".join(group) for group in re.findall(r"\d+", shown)]
    said = ", ".join(groups)
    return said if home else "plus " + said
