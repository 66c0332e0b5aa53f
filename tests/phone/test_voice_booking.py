"""A whole booking by voice, with the real speech models, over the real media socket.

The gateway runs under uvicorn with Whisper tiny.en and Piper (``gateway models
install tiny.en en_US-joe-medium``; ``scripts/setup`` installs them). The
caller is Twilio's side of a call placed through the signed voice webhook,
with a caller ID, speaking Piper audio in real time (20 ms frames of 8 kHz
mu-law). Like a person on the phone it answers what it is asked (the bot's
words from the call's live trace) and corrects a read-back that is wrong,
so a misheard word costs a turn, not the test. What must hold: the lead that
comes out carries the right name, E.164 phone, email, service and time.

Skipped, with the reason, only when the models are not installed.
"""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from phone.fake_twilio import AUTH_TOKEN

from providers.speech import models
from testkit.phone import TwilioCaller, fetch_call_report
from testkit.phone.audio import speak

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "data" / "models"
CLIENT = "spa-del-sol"
CALLER_ID = "+16175550147"
ADMIN = "test-admin-token"
NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))  # a Wednesday

needs_models = pytest.mark.skipif(
    models.resolve("whisper", "tiny.en", MODELS) is None
    or models.resolve("piper", "en_US-joe-medium", MODELS) is None,
    reason=f"real speech models not installed in {MODELS}: "
    "`gateway models install tiny.en en_US-joe-medium` (scripts/setup does)",
)

SERVICE = "I'd like to book a Swedish massage"
NAME = "My name is Maria Lopez"
EMAIL = "m a r i a dot l o p e z at example dot com"
TIME = "Friday at three pm"


def asked(bot: str) -> str:
    """The question in the bot's line (its last sentence ending in "?"), lower case;
    the DTMF offer ("Or press 1 for ...") is not a question to answer by voice."""
    sentences = [s for s in re.split(r"(?<=[.?!])\s+", bot) if not s.startswith("Or press")]
    questions = [s for s in sentences if s.endswith("?")]
    return (questions[-1] if questions else " ".join(sentences)).casefold()


def answer(bot: str) -> str | None:
    """What the caller says to the bot's ``bot`` line; None once booked."""
    said = bot.casefold()
    if "you're booked" in said:
        return None
    if "here's what i have" in said:  # the read-back: correct what is wrong, else confirm
        if "maria lopez" not in said:
            return "No, my name is Maria Lopez"
        if "m a r i a dot l o p e z at example dot com" not in said:
            return f"No, my email is {EMAIL}"
        if "friday" not in said or "3:00 pm" not in said:
            return f"No, {TIME}"
        return "yes"
    question = asked(bot)
    if "calling from" in question:
        return (
            "yes" if "0147" in question else "no, six one seven, five five five, oh one four seven"
        )
    if "email" in question or "spell it" in question:
        return EMAIL
    if "name" in question:
        return NAME
    if "when would you like" in question or "what time" in question or "day and time" in said:
        return TIME
    return SERVICE


@needs_models
@pytest.mark.alone  # call-speed turn-taking with the real models
async def test_a_caller_books_by_voice_end_to_end(running_gateway: Any) -> None:
    voices: dict[str, tuple[bytes, int]] = {}

    async def voice(text: str) -> tuple[bytes, int]:
        if text not in voices:
            voices[text] = await asyncio.to_thread(
                speak, text, "en_US-joe-medium", models_dir=MODELS
            )
        return voices[text]

    dialogue: list[tuple[str, str]] = []
    with running_gateway(GATEWAY_MODELS_DIR=MODELS, clock=lambda: NOW) as gw:
        async with (
            asyncio.timeout(400),
            TwilioCaller(
                f"{gw.url}/twilio/voice/{CLIENT}", auth_token=AUTH_TOKEN, caller=CALLER_ID
            ) as call,
        ):
            await call.wait_for_reply(timeout_s=90)  # the greeting (models load first)
            bot = "How can I help you today?"
            for _ in range(12):
                line = answer(bot)
                if line is None:
                    break
                pcm, rate = await voice(line)
                said = await call.say(pcm, rate)
                await call.wait_for_reply(timeout_s=60, after=said.ended_at)
                report = await fetch_call_report(gw.url, call.call_sid, ADMIN)
                assert report is not None and report.turns
                bot = report.turns[-1].reply_text
                dialogue.append((line, bot))
            transcript = "\n".join(f"caller: {c}\n   bot: {b}" for c, b in dialogue)
            assert "you're booked" in bot.casefold(), transcript
        async with httpx.AsyncClient(
            base_url=gw.url, headers={"Authorization": f"Bearer {ADMIN}"}
        ) as http:
            leads = (await http.get("/admin/api/leads", params={"client_id": CLIENT})).json()

    (lead,) = leads
    fields = lead["fields"]
    assert fields["name"] == "Maria Lopez", transcript
    assert fields["phone"] == CALLER_ID  # offered from the caller ID, accepted with "yes"
    assert fields["email"] == "maria.lopez@example.com", transcript
    assert fields["service"] == "Swedish Massage"
    assert lead["start"] == "2026-11-27T15:00:00-08:00"
    # the read-back a caller hears on the phone: digits grouped, email spelled
    summary = next(b for _c, b in dialogue if "Here's what I have" in b)
    assert re.search(r"6 1 7, 5 5 5, 0 1 4 7", summary), summary
