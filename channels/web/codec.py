"""Web chat wire format: client frames in, server events out.

This module is the only place that knows the JSON shapes of DESIGN.md's
"Web chat protocol"; :mod:`channels.web.endpoint` is the transport around it.

Client -> server (JSON text frames)::

    {"type": "message", "text": "...", "id": "<client message id>"}
    {"type": "resume", "session_id": "...", "last_event_id": N}

Server -> client (every event has an integer ``event_id``; see the endpoint's
docstring for how ids are allocated)::

    {"type": "session", "event_id": N, "session_id": "...", "resumed": bool,
     "greeting": "...", "client_name": "..."}
    {"type": "token", "event_id": N, "content": "...", "reply_to": id | null}
    {"type": "discard", "event_id": N, "reason": "failed" | "conflict" | "rejected", "reply_to": id | null}
    {"type": "complete", "event_id": N, "text": "...", "quick_replies": [{"title", "value"}],
     "actions": [{"type", "target"}], "metadata": {...}, "reply_to": id | null}
    {"type": "error", "event_id": N, "code": "...", "message": "...", "reply_to": id | null}

``resumed``, ``greeting``, ``client_name`` and ``reply_to`` are additions to
the contract; clients that do not know them can ignore them.

The chat URL may carry ``?visitor_id=<id>`` (an addition; 8 to 128 letters,
digits, ``-`` or ``_``): a random id the widget keeps in the browser, so the
business recognises a returning visitor (``ChannelContext.visitor_id``;
:mod:`engine.contacts`). Any other value is ignored, never refused.

``discard`` (an addition) withdraws every ``token`` of the current reply
received so far: the tokens after it, and the ``complete`` event, replace
them. It is sent when streamed text turns out not to be the reply (the agent
failed mid-stream; the turn's commit conflicted and the turn ran again). A
client that ignores it still gets the right text in ``complete``.

``metadata`` holds the generic fields (``purpose``, ``expecting``, ``slots``,
``confidence``, ``state``, ``sources``: ``[{"file", "section", "page", "score"}]``
for answers drawn from knowledge or config) and, beside them, the answering purpose's own
facts (lead capture: ``lead_id``, ``booking_id`` once set).

:func:`parse_frame` turns one websocket frame into a :class:`MessageFrame` or
:class:`ResumeFrame`, or raises :class:`ProtocolError` with one of the codes
in :data:`ErrorCode`. Error messages name the field and the rule, never the
user's text (it may carry personal data).

Hostile input: a frame nested more than :data:`MAX_DEPTH` arrays/objects deep
is refused (``bad_frame``) by a linear scan before ``json.loads`` runs, so a
small frame cannot exhaust the parser's recursion limit. JSON escapes may spell
lone UTF-16 surrogates (``"\\ud800"``), which ``json.loads`` accepts but which
cannot be encoded as UTF-8 for the store or the reply; in a message's ``text``
and ``id`` each one is replaced with U+FFFD (the user loses nothing else).
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from engine.messages import Action, ConversationResponse, JsonScalar, QuickReply, Source

__all__ = [
    "ClientFrame",
    "CompleteEvent",
    "DiscardEvent",
    "ErrorCode",
    "ErrorEvent",
    "MessageFrame",
    "ProtocolError",
    "ResumeFrame",
    "ServerEvent",
    "SessionEvent",
    "TokenEvent",
    "complete_event",
    "discard_event",
    "dump_event",
    "error_event",
    "load_event",
    "parse_frame",
    "session_event",
    "token_event",
    "visitor_id",
]

ErrorCode = Literal[
    "bad_json",  # the frame is not valid JSON
    "bad_frame",  # not a JSON object, nested too deeply, no/invalid "type", a bad resume, binary
    "unknown_type",  # "type" names no client frame
    "bad_message",  # a message frame with missing/empty/non-string text or a bad id
    "too_large",  # frame over max_frame_bytes or text over max_text_chars
    "rate_limited",  # too many messages on this connection; retry later
    "busy",  # the session stayed locked (another turn is running); retry later
    "unavailable",  # the session store failed; retry later
    "unknown_session",  # a resume named a session the server does not have
]

MAX_ID_CHARS = 128
"""Longest accepted client message id and session id, in characters."""
MAX_EVENT_ID = 2**53
"""Largest accepted ``last_event_id`` (what a JavaScript number holds exactly)."""
MAX_DEPTH = 32
"""Deepest accepted nesting of JSON arrays and objects in a frame (a protocol frame needs 2)."""


class ProtocolError(Exception):
    """A frame broke the protocol. ``code`` goes on the wire in an error event."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code: ErrorCode = code
        self.message = message


# -- client frames ----------------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class MessageFrame(_Frame):
    """A user message. ``text`` is stripped; ``id`` (the client's message id,
    optional) makes retries idempotent: an id already processed in the session
    is not run again."""

    type: Literal["message"] = "message"
    text: str
    id: str | None = None


class ResumeFrame(_Frame):
    """Continue ``session_id``, replaying events with id > ``last_event_id``."""

    type: Literal["resume"] = "resume"
    session_id: str
    last_event_id: int


ClientFrame = MessageFrame | ResumeFrame

_SESSION_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")


class _RawMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: StrictStr
    id: StrictStr | StrictInt | None = None


class _RawResume(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS)]
    last_event_id: Annotated[StrictInt, Field(ge=0, le=MAX_EVENT_ID)] = 0


def _explain(exc: ValidationError) -> str:
    # Field and rule only: pydantic's str(exc) would quote the input.
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(p) for p in err["loc"]) or "frame"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse_frame(data: str | bytes, *, max_frame_bytes: int, max_text_chars: int) -> ClientFrame:
    """Parse one websocket frame (``str`` = text frame, ``bytes`` = binary frame).

    ``max_frame_bytes``: largest accepted frame, in UTF-8 bytes.
    ``max_text_chars``: longest accepted message text, in characters.
    Raises :class:`ProtocolError`.
    """
    if isinstance(data, bytes):
        raise ProtocolError("bad_frame", "binary frames are not supported; send JSON text frames")
    # surrogatepass: a test or an in-process caller may hand over a lone surrogate.
    if len(data) > max_frame_bytes or len(data.encode("utf-8", "surrogatepass")) > max_frame_bytes:
        raise ProtocolError("too_large", f"frame is larger than {max_frame_bytes} bytes")
    if _nested_too_deeply(data, MAX_DEPTH):
        raise ProtocolError("bad_frame", f"frame is nested too deeply (over {MAX_DEPTH} levels)")
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ProtocolError("bad_json", "frame is not valid JSON") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("bad_frame", 'frame must be a JSON object with a "type"')
    kind = raw.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad_frame", 'frame needs a string "type": "message" or "resume"')
    if kind == "message":
        return _parse_message(raw, max_text_chars)
    if kind == "resume":
        return _parse_resume(raw)
    raise ProtocolError("unknown_type", 'unknown frame type; use "message" or "resume"')


# A JSON string, or an unterminated one running to the end; possessive, so linear.
_JSON_STRING = re.compile(r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def _nested_too_deeply(data: str, limit: int) -> bool:
    """Whether brackets outside strings nest deeper than ``limit``; linear in ``data``.

    Exact for valid JSON; for invalid JSON the answer does not matter, as
    ``json.loads`` refuses it anyway.
    """
    if data.count("[") + data.count("{") <= limit:
        return False
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", data))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > limit


def _replace_lone_surrogates(value: str) -> str:
    # json.loads joins escaped surrogate pairs, so any surrogate left is alone.
    return _LONE_SURROGATE.sub("\ufffd", value)


def _parse_message(raw: dict[str, object], max_text_chars: int) -> MessageFrame:
    try:
        msg = _RawMessage.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(
            "bad_message", f'a message needs a non-empty string "text" ({_explain(exc)})'
        ) from exc
    text = _replace_lone_surrogates(msg.text).strip()
    if not text:
        raise ProtocolError("bad_message", 'message "text" is empty')
    if len(text) > max_text_chars:
        raise ProtocolError("too_large", f"message text is longer than {max_text_chars} characters")
    msg_id = None if msg.id is None else _replace_lone_surrogates(str(msg.id))
    if msg_id is not None and not 0 < len(msg_id) <= MAX_ID_CHARS:
        raise ProtocolError("bad_message", f'message "id" must be 1 to {MAX_ID_CHARS} characters')
    return MessageFrame(text=text, id=msg_id)


def _parse_resume(raw: dict[str, object]) -> ResumeFrame:
    try:
        resume = _RawResume.model_validate(raw)
    except ValidationError as exc:
        raise ProtocolError(
            "bad_frame",
            'resume needs "session_id" (string) and "last_event_id" (integer >= 0) '
            f"({_explain(exc)})",
        ) from exc
    if not set(resume.session_id) <= _SESSION_ID_CHARS:
        raise ProtocolError(
            "bad_frame", 'resume "session_id" may hold only letters, digits, - and _'
        )
    return ResumeFrame(session_id=resume.session_id, last_event_id=resume.last_event_id)


def visitor_id(value: str | None) -> str | None:
    """The ``visitor_id`` query parameter if well-formed, else None."""
    if value is None or not 8 <= len(value) <= MAX_ID_CHARS:
        return None
    return value if set(value) <= _SESSION_ID_CHARS else None


# -- server events ----------------------------------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class SessionEvent(_Event):
    """Sent once per connection, first. ``event_id`` is where the connection
    starts in the session's event sequence (0 for a new session, the client's
    ``last_event_id`` on resume); it is not stored in the event log."""

    type: Literal["session"] = "session"
    event_id: int
    session_id: str
    resumed: bool = False
    greeting: str | None = None
    client_name: str | None = None


class TokenEvent(_Event):
    type: Literal["token"] = "token"
    event_id: int
    content: str
    reply_to: str | None = None


class DiscardEvent(_Event):
    """Withdraw the tokens of the current reply streamed so far."""

    type: Literal["discard"] = "discard"
    event_id: int
    reason: str = "failed"
    reply_to: str | None = None


class WireMetadata(BaseModel):
    """A reply's ``metadata`` on the wire: the generic fields, plus the
    answering purpose's own facts as extra keys (``booking_id``...)."""

    model_config = ConfigDict(frozen=True, extra="allow")

    purpose: str | None = None
    expecting: str | None = None
    slots: dict[str, str] = Field(default_factory=dict)
    confidence: float | None = None
    state: str | None = None
    sources: tuple[Source, ...] = ()


class CompleteEvent(_Event):
    type: Literal["complete"] = "complete"
    event_id: int
    text: str
    quick_replies: tuple[QuickReply, ...] = ()
    actions: tuple[Action, ...] = ()
    metadata: WireMetadata = WireMetadata()
    reply_to: str | None = None


class ErrorEvent(_Event):
    """Bad input or a refused message; connection-scoped, never replayed."""

    type: Literal["error"] = "error"
    event_id: int
    code: str
    message: str
    reply_to: str | None = None


AnyServerEvent = SessionEvent | TokenEvent | DiscardEvent | CompleteEvent | ErrorEvent
ServerEvent = Annotated[AnyServerEvent, Field(discriminator="type")]
_SERVER_EVENT: TypeAdapter[AnyServerEvent] = TypeAdapter(ServerEvent)


def dump_event(event: AnyServerEvent) -> str:
    """The event as one compact JSON text frame."""
    return event.model_dump_json()


def load_event(text: str) -> AnyServerEvent:
    """Parse a server event (for tests and tools); raises ``ValidationError``."""
    return _SERVER_EVENT.validate_json(text)


def session_event(
    event_id: int,
    session_id: str,
    *,
    resumed: bool,
    greeting: str | None = None,
    client_name: str | None = None,
) -> str:
    return dump_event(
        SessionEvent(
            event_id=event_id,
            session_id=session_id,
            resumed=resumed,
            greeting=greeting,
            client_name=client_name,
        )
    )


def token_event(event_id: int, content: str, reply_to: str | None = None) -> str:
    return dump_event(TokenEvent(event_id=event_id, content=content, reply_to=reply_to))


def discard_event(event_id: int, reason: str, reply_to: str | None = None) -> str:
    return dump_event(DiscardEvent(event_id=event_id, reason=reason, reply_to=reply_to))


def complete_event(
    event_id: int, response: ConversationResponse, reply_to: str | None = None
) -> str:
    meta = response.metadata
    extra: dict[str, JsonScalar] = {
        k: v for k, v in meta.purpose_data.items() if k not in WireMetadata.model_fields
    }
    return dump_event(
        CompleteEvent(
            event_id=event_id,
            text=response.text,
            quick_replies=response.quick_replies,
            actions=response.actions,
            metadata=WireMetadata(
                purpose=meta.purpose,
                expecting=meta.expecting,
                slots=meta.slots,
                confidence=meta.confidence,
                state=meta.state,
                sources=meta.sources,
                **extra,
            ),
            reply_to=reply_to,
        )
    )


def error_event(event_id: int, code: ErrorCode, message: str, reply_to: str | None = None) -> str:
    return dump_event(ErrorEvent(event_id=event_id, code=code, message=message, reply_to=reply_to))
