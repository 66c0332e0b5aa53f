"""Reading a customer's answer back as one of the offered choices."""

from __future__ import annotations

import pytest

from channels.whatsapp.choices import choice_for, numbered_text, reply_id
from engine.messages import QuickReply

BOOK = (
    QuickReply(title="Yes, book it", value="yes"),
    QuickReply(title="Change something", value="change"),
    QuickReply(title="Talk to a person", value="human"),
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2", "change"),
        ("2.", "change"),
        (" #2 ", "change"),
        ("2)", "change"),
        ("option 2", "change"),
        ("2nd", "change"),
        ("two", "change"),
        ("Two!", "change"),
        ("second", "change"),
        ("the second one", "change"),
        ("The second option please", "change"),
        ("last", "human"),
        ("the last one", "human"),
        ("1", "yes"),
        ("first", "yes"),
        ("dos", "change"),
        ("la segunda", "change"),
        ("el tercero", "human"),
        ("opción 3", "human"),
        ("último", "human"),
        ("３", "human"),  # full-width digit
    ],
)
def test_positions(text: str, expected: str) -> None:
    assert choice_for(text, BOOK) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, book it", "yes"),
        ("yes book it", "yes"),
        ("  YES,   BOOK IT!! ", "yes"),
        ("👍 yes, book it", "yes"),
        ("change", "change"),
        ("HUMAN", "human"),
        ("yes", "yes"),  # a value
        ("Change", "change"),
        ("Chnage something", "change"),  # typo
        ("Talk to a persn", "human"),
    ],
)
def test_titles_and_values(text: str, expected: str) -> None:
    assert choice_for(text, BOOK) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "4",
        "0",
        "fourth",
        "book",
        "no",
        "Yes, book it, but on Friday instead",
        "2 people please",
        "I want the second",
        "one two",
        "something",  # a word of a title is not the title
    ],
)
def test_not_a_choice(text: str) -> None:
    assert choice_for(text, BOOK) is None


def test_no_choices() -> None:
    assert choice_for("1", ()) is None


def test_titles_before_positions() -> None:
    sizes = tuple(QuickReply(title=str(n), value=f"party-{n}") for n in (2, 3, 4))
    assert choice_for("2", sizes) == "party-2"
    assert choice_for("3", sizes) == "party-3"
    assert choice_for("the first one", sizes) == "party-2"


def test_reply_ids() -> None:
    assert choice_for("Change something", BOOK, reply_id(2, "change")) == "change"
    assert choice_for("", BOOK, "qr:3") == "human"
    assert choice_for("", BOOK, "qr:9") is None


def test_a_stale_button_maps_to_the_choice_it_named() -> None:
    # An older message offered "human" second; the current one offers it third.
    assert choice_for("Talk to a person", BOOK, reply_id(2, "human")) == "human"
    # A button for a choice no longer offered: not a choice, even though a
    # choice sits at that position now.
    assert choice_for("Cancel", BOOK, reply_id(2, "cancel")) is None


def test_payload_equal_to_a_value_or_title() -> None:
    assert choice_for("whatever", BOOK, "human") == "human"
    assert choice_for("whatever", BOOK, "Yes, book it") == "yes"
    assert choice_for("Talk to a person", BOOK, "unknown-payload") == "human"


def test_shortened_title_echoed_back() -> None:
    choices = (
        QuickReply(title="Tuesday 10:00 with Dr. Smith", value="tue"),
        QuickReply(title="Wednesday 16:30 with Dr. Ruiz", value="wed"),
    )
    assert choice_for("Tuesday 10:00 with Dr.…", choices) == "tue"


def test_near_identical_titles_are_ambiguous() -> None:
    choices = (
        QuickReply(title="Room 101A", value="a"),
        QuickReply(title="Room 101B", value="b"),
    )
    assert choice_for("Room 101C", choices) is None
    assert choice_for("room 101b", choices) == "b"


def test_titles_in_other_scripts() -> None:
    choices = (QuickReply(title="Да, записать", value="yes"), QuickReply(title="Нет", value="no"))
    assert choice_for("да записать", choices) == "yes"
    assert choice_for("нет", choices) == "no"
    cjk = (
        QuickReply(title="予約する", value="book"),
        QuickReply(title="キャンセル", value="cancel"),
    )
    assert choice_for("予約する", cjk) == "book"


def test_blank_title_uses_the_value() -> None:
    choices = (QuickReply(title="", value="Morning"), QuickReply(title=" ", value="Evening"))
    assert choice_for("evening", choices) == "Evening"
    assert (
        numbered_text("When?", choices) == "When?\n\n1. Morning\n2. Evening\n\nReply with a number."
    )


def test_lone_surrogates_do_not_break_matching() -> None:
    assert choice_for("\ud800", BOOK) is None
    assert choice_for("2\udfff", BOOK) == "change"
    assert reply_id(1, "\ud800").startswith("qr:1:")


def test_reply_ids_are_short_and_stable() -> None:
    long_value = "x" * 5000
    assert reply_id(1, long_value) == reply_id(1, long_value)
    assert len(reply_id(10, long_value)) <= 24
    assert reply_id(1, "a") != reply_id(1, "b")


def test_numbered_text_without_hint() -> None:
    assert numbered_text("", BOOK[:2], hint="") == "1. Yes, book it\n2. Change something"
