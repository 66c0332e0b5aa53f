"""What the phone channel's routes run on, passed to their factories.

The gateway builds these in its lifespan and hands the route factories a
provider (``Callable[[], PhoneDeps]``); the routes never read ``app.state``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from channels.phone.admission import LocalStreamGate, StreamGate
from channels.phone.budget import BURST_S

if TYPE_CHECKING:
    from channels.phone.capacity import CallCapacity
    from channels.phone.trace import CallTraces
    from channels.phone.webhook import PhoneSettings
    from engine.config import ClientRegistry
    from engine.contract import TurnEngine
    from engine.outbox import Outbox
    from providers.speech.providers import SpeechHub

__all__ = ["PhoneDeps", "VoiceDeps"]


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
