"""A fake Twilio for driving ``WS /twilio/media/{client_id}`` through Starlette's TestClient.

It sends ``connected``/``start``/``media``/``dtmf``/``stop`` messages, echoes
the ``mark`` messages the gateway sends (at once, as they are read: the test
reads at its own pace, it does not play the audio in real time) and reads the
gateway's ``media``/``mark``/``clear`` messages as typed values. The JSON is
:mod:`testkit.phone.wire`'s, read strictly (a field the Media Streams
documentation does not list fails the test). For Twilio on a real-time
clock over a real socket, see :class:`testkit.phone.TwilioCaller`.

Like Twilio, a call starts at the voice webhook: :func:`answer` POSTs a signed
voice request and returns the TwiML's ``<Stream>`` parameters (the one-time
stream token among them), which :class:`FakeTwilio` sends in ``start``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import partial

from starlette.testclient import TestClient, WebSocketTestSession

from testkit.phone.audio import SILENT_FRAME, synthesize, ulaw_frames, voiced_buzz
from testkit.phone.voice import parse_connect_twiml, voice_request
from testkit.phone.wire import (
    Outbound,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioStream,
    parse_outbound,
)

__all__ = [
    "ACCOUNT_SID",
    "AUTH_TOKEN",
    "CALL_SID",
    "SILENT_FRAME",
    "STREAM_SID",
    "FakeTwilio",
    "answer",
    "buzz",
    "is_clear",
    "is_end_mark",
    "is_mark",
    "is_media",
    "media_payloads",
    "utterance",
]

STREAM_SID = "MZ" + "0" * 32
CALL_SID = "CA" + "1" * 32
ACCOUNT_SID = "AC" + "2" * 32
AUTH_TOKEN = "phone-tests-auth-token"
"""The clients' Twilio auth token in the phone tests (``tests/phone/conftest.py`` sets it)."""
TRAILING_SILENCE = [SILENT_FRAME] * 50
"""1 s of silence after an utterance: the gateway's endpointing ends the turn in it."""


def utterance(text: str) -> list[bytes]:
    """``text`` spoken by espeak-ng (its default 175 words a minute, untrimmed) as 20 ms
    mu-law frames, then 1 s of silence."""
    pcm, rate = synthesize(text, words_per_minute=175, trim=False)
    return ulaw_frames(pcm, rate) + TRAILING_SILENCE


def buzz(ms: int = 1200) -> list[bytes]:
    """``ms`` of speech without words (a voiced buzz) as 20 ms mu-law frames, then 1 s of
    silence: a caller's turn for a scripted recogniser to "hear"."""
    return ulaw_frames(voiced_buzz(ms), 8000) + TRAILING_SILENCE


def answer(
    client: TestClient,
    call_sid: str = CALL_SID,
    caller: str = "+14155550123",
    *,
    client_id: str = "spa-del-sol",
    auth_token: str = AUTH_TOKEN,
    to: str = "+14155550199",
) -> dict[str, str]:
    """Twilio's voice request for a new call, signed with ``auth_token``; returns the
    ``<Parameter>``s of the TwiML's ``<Stream>`` (``token`` among them)."""
    path = f"/twilio/voice/{client_id}"
    url = str(client.base_url).rstrip("/") + path
    form, headers = voice_request(
        url, auth_token, call_sid=call_sid, account_sid=ACCOUNT_SID, caller=caller, to=to
    )
    response = client.post(path, data=form, headers=headers)
    assert response.status_code == 200, response.text
    return parse_connect_twiml(response.text).parameters


class FakeTwilio:
    """Drives one media stream the way Twilio does. ``media`` may be called from another
    thread while this one reads (a line streaming in real time).

    ``parameters`` are the TwiML ``<Stream>`` parameters sent in ``start``
    (from :func:`answer`); None sends the wire's defaults, with no token.
    """

    def __init__(
        self,
        ws: WebSocketTestSession,
        call_sid: str = CALL_SID,
        caller: str = "+14155550123",
        *,
        parameters: Mapping[str, str] | None = None,
    ) -> None:
        self.ws = ws
        self.wire = TwilioStream(
            caller=caller, stream_sid=STREAM_SID, call_sid=call_sid, account_sid=ACCOUNT_SID
        )
        self.call_sid = call_sid
        self.parameters = parameters
        self._lock = threading.Lock()  # keeps sequence numbers in sending order

    def _send(self, build: Callable[[], str]) -> None:
        with self._lock:
            self.ws.send_text(build())

    def connect(self) -> None:
        self._send(self.wire.connected)

    def start(self) -> None:
        self._send(partial(self.wire.start, self.parameters))

    def media(self, frames: list[bytes]) -> None:
        """Send each mu-law payload (normally 160 bytes = 20 ms) as one ``media`` message."""
        for frame in frames:
            self._send(partial(self.wire.media, frame))

    def media_payload(self, payload: str) -> None:
        """A ``media`` message whose payload is sent as given (malformed input)."""
        self._send(partial(self.wire.media_payload, payload))

    def dtmf(self, digits: str) -> None:
        """Press each key of ``digits``, one ``dtmf`` message per key."""
        for digit in digits:
            self._send(partial(self.wire.dtmf, digit))

    def stop(self) -> None:
        self._send(self.wire.stop)

    def read_until(self, done: Callable[[Outbound], bool]) -> list[Outbound]:
        """Messages from the gateway up to and including the first ``done`` one; marks echoed."""
        seen: list[Outbound] = []
        while True:
            message = parse_outbound(self.ws.receive_text(), strict=True)
            seen.append(message)
            assert message.stream_sid == STREAM_SID
            if isinstance(message, OutboundMark):
                self._send(partial(self.wire.mark, message.name))
            if done(message):
                return seen


def is_media(message: Outbound) -> bool:
    return isinstance(message, OutboundMedia)


def is_mark(message: Outbound) -> bool:
    return isinstance(message, OutboundMark)


def is_clear(message: Outbound) -> bool:
    return isinstance(message, OutboundClear)


def is_end_mark(message: Outbound) -> bool:
    return isinstance(message, OutboundMark) and message.name.endswith(":end")


def media_payloads(messages: list[Outbound]) -> list[bytes]:
    return [m.ulaw for m in messages if isinstance(m, OutboundMedia)]
