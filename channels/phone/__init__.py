"""The phone channel: Twilio Voice + bidirectional Media Streams.

Low-level layer (no websocket, no engine):

* :mod:`channels.phone.codec` — Twilio Media Streams JSON <-> typed events
* :mod:`channels.phone.playback` — paced outbound audio with marks and barge-in clear
* :mod:`channels.phone.turns` — the turn-taking state machine (endpointing, barge-in, timeouts)
* :mod:`channels.phone.state` — the call's own state machine (listening, thinking, ...)

One call (wired per connection by :mod:`channels.phone.media`):

* :mod:`channels.phone.stream` — the websocket: typed events in, text frames out
* :mod:`channels.phone.call` — the coordinator: acts on the caller's turns
* :mod:`channels.phone.inbound` — caller audio -> turn events; speech recognition
* :mod:`channels.phone.answer` — one engine turn's typed events -> sentences (and withdrawals)
* :mod:`channels.phone.speaker` — replies -> TTS -> playback; heard/cut bookkeeping
* :mod:`channels.phone.bargein`, :mod:`channels.phone.dtmf`, :mod:`channels.phone.actions`
  — barge-in traces, DTMF entry, transfer / hang-up through the outbox
* :mod:`channels.phone.tasks`, :mod:`channels.phone.failures` — the call's tasks; logging
  failures without user data
"""
