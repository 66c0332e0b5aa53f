"""The phone channel: Twilio Voice + bidirectional Media Streams.

Low-level layer (no websocket, no engine):

* :mod:`adapters.phone.codec` — Twilio Media Streams JSON <-> typed events
* :mod:`adapters.phone.playback` — paced outbound audio with marks and barge-in clear
* :mod:`adapters.phone.turns` — the turn-taking state machine (endpointing, barge-in, timeouts)
"""
