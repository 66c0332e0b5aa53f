"""The channels: phone (Twilio Media Streams), web chat (web socket) and WhatsApp/SMS
(Twilio and Meta webhooks). Each turns its wire format into engine turns and
renders the engine's typed events back; nothing past a channel sees vendor JSON.

Imports: :mod:`engine` and :mod:`providers` only (never :mod:`gateway`).
"""
