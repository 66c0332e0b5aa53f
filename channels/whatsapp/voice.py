"""Voice notes for the messaging worker: download with the provider's
credentials, decode, transcribe with the client's recogniser
(:mod:`channels.whatsapp.media`), so the engine reads the transcript."""

from __future__ import annotations

import httpx

from channels.whatsapp.media import fetch_media, transcribe_voice_note
from channels.whatsapp.models import InboundMessage
from channels.whatsapp.worker import Transcriber
from engine.config import ClientConfig
from providers.speech.providers import SpeechHub
from providers.speech.stt import SpeechToText

__all__ = ["voice_notes"]


def voice_notes(
    http: httpx.AsyncClient, graph_base_url: str, hub: SpeechHub | None = None
) -> Transcriber:
    """A :data:`~channels.whatsapp.worker.Transcriber` over ``http`` (Meta's
    Graph at ``graph_base_url``) and ``hub`` (the speech models, loaded per
    client on its first voice note, off the event loop)."""
    speech = hub or SpeechHub()

    async def transcribe(client: ClientConfig, msg: InboundMessage) -> str:
        from channels.phone.media import speech_specs

        twilio, _key = client.channels.twilio_for(msg.channel)
        meta = client.channels.whatsapp.meta
        data, content_type = await fetch_media(
            http,
            msg.provider,
            msg.media[0],
            twilio_auth=(twilio.account_sid, twilio.auth_token)
            if twilio and twilio.account_sid and twilio.auth_token
            else None,
            meta_token=meta.access_token if meta else None,
            graph_base_url=graph_base_url,
        )

        async def recogniser() -> SpeechToText:
            return (await speech.get(*speech_specs(client))).stt

        return await transcribe_voice_note(
            recogniser, data, content_type, session_id=msg.message_id
        )

    return transcribe
