"""Twilio's side of a phone call, for tests, the ``gateway call`` command and the phone bench.

Shipped with the package, like ``starlette.testclient``, but never imported by
the serving path (``tests/test_testing_modules.py`` checks it):

* :mod:`~testkit.phone.wire` — the Media Streams messages a fake
  Twilio sends (:class:`TwilioStream`) and reads (:func:`parse_outbound`);
  the one place outside :mod:`channels.phone.codec` that spells Twilio's JSON.
* :mod:`~testkit.phone.voice` — the signed voice webhook request a
  call starts with, and the ``<Connect><Stream>`` TwiML it answers
  (:func:`answer_call`): how a fake Twilio gets the one-time stream token.
* :mod:`~testkit.phone.caller` — :class:`TwilioCaller`, a simulated
  caller over a real websocket, on a real-time clock (playout, marks, ``clear``,
  echo and noise on the line).
* :mod:`~testkit.phone.audio` — espeak-ng speech, WAV files, a
  speech-like buzz, 20 ms mu-law frames.
* :mod:`~testkit.phone.report` — the gateway's record of a call
  (``GET /admin/api/calls/{call_sid}``).
"""

from testkit.phone.audio import (
    SILENT_FRAME,
    read_wav,
    synthesize,
    trim_silence,
    ulaw_frames,
    voiced_buzz,
)
from testkit.phone.caller import (
    BotReply,
    CallEnded,
    MarkEcho,
    OutboundFrame,
    TwilioCaller,
    Underrun,
    Utterance,
)
from testkit.phone.report import (
    STAGES,
    CallReport,
    ServerBargeIn,
    ServerTurn,
    fetch_call_report,
    parse_call_report,
)
from testkit.phone.voice import (
    ConnectStream,
    answer_call,
    parse_connect_twiml,
    voice_request,
)
from testkit.phone.wire import (
    Outbound,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TwilioStream,
    WireError,
    parse_outbound,
)

__all__ = [
    "SILENT_FRAME",
    "STAGES",
    "BotReply",
    "CallEnded",
    "CallReport",
    "ConnectStream",
    "MarkEcho",
    "Outbound",
    "OutboundClear",
    "OutboundFrame",
    "OutboundMark",
    "OutboundMedia",
    "ServerBargeIn",
    "ServerTurn",
    "TwilioCaller",
    "TwilioStream",
    "Underrun",
    "Utterance",
    "WireError",
    "answer_call",
    "fetch_call_report",
    "parse_call_report",
    "parse_connect_twiml",
    "parse_outbound",
    "read_wav",
    "synthesize",
    "trim_silence",
    "ulaw_frames",
    "voice_request",
    "voiced_buzz",
]
