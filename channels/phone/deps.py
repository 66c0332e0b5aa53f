"""What the phone channel's routes run on, passed to their factories.

The gateway builds these in its lifespan and hands the route factories a
provider (``Callable[[], PhoneDeps]``); the routes never read ``app.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from channels.phone.admission import LocalStreamGate, StreamGate
from channels.phone.budget import BURST_S
from channels.phone.rest import DEFAULT_API_BASE_URL

if TYPE_CHECKING:
    from channels.phone.capacity import CallCapacity
    from channels.phone.trace import CallTraces
    from engine.config import ClientRegistry
    from engine.contract import TurnEngine
    from engine.outbox import Outbox
    from providers.speech.providers import SpeechHub

__all__ = ["PhoneDeps", "PhoneSettings", "VoiceDeps"]


@dataclass(frozen=True)
class PhoneSettings:
    """Phone-channel settings the gateway reads once (:class:`~channels.phone.deps.VoiceDeps`).

    ``public_url`` is ``GATEWAY_PUBLIC_URL``: the base URL Twilio calls
    (``https://gw.example.com``, optionally with a path prefix), or None to use
    each request's own URL. ``twilio_base_url`` is ``TWILIO_BASE_URL``: Twilio's
    REST API base, None for :data:`~channels.phone.rest.DEFAULT_API_BASE_URL`.
    Trailing slashes are dropped.
    """

    public_url: str | None = None
    twilio_base_url: str | None = None

    def __post_init__(self) -> None:
        for name in ("public_url", "twilio_base_url"):
            value = getattr(self, name)
            if value is None:
                continue
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{name}: expected an http(s) URL with a host, got {value!r}")
            if parts.query or parts.fragment:
                raise ValueError(f"{name}: a base URL takes no query or fragment, got {value!r}")
            object.__setattr__(self, name, value.rstrip("/"))

    @property
    def api_base_url(self) -> str:
        """Twilio REST base URL to use."""
        return self.twilio_base_url or DEFAULT_API_BASE_URL


@dataclass(slots=True)
class VoiceDeps:
    """The voice webhook's: the loaded clients, the phone settings (public URL
    for signatures and the stream URL) and this replica's phone lines (None:
    unlimited, nothing counted; the stream gate must share the same object)."""

    registry: ClientRegistry
    settings: PhoneSettings
    lines: CallCapacity | None = None


@dataclass(slots=True)
class PhoneDeps:
    """A media stream's: the loaded clients, the engine, the outbox (call
    actions), the speech hub (models loaded once, shared by calls) and the
    call traces; ``streams`` admits media streams (spent tokens, live calls:
    per process, or shared through Redis); ``audio_burst_s`` is how far ahead of
    real time a caller's audio may run, in seconds. Mutable so a test can put fake
    speech providers in."""

    registry: ClientRegistry
    engine: TurnEngine
    outbox: Outbox
    speech_hub: SpeechHub
    call_traces: CallTraces
    streams: StreamGate = field(default_factory=LocalStreamGate)
    audio_burst_s: float = BURST_S
