"""The phone channel: Twilio Voice + bidirectional Media Streams.

Low-level layer (no websocket, no engine):

* :mod:`adapters.phone.codec` — Twilio Media Streams JSON <-> typed events
* :mod:`adapters.phone.playback` — paced outbound audio with marks and barge-in clear
* :mod:`adapters.phone.turns` — the turn-taking state machine (endpointing, barge-in, timeouts)
* :mod:`adapters.phone.state` — the call's own state machine (listening, thinking, ...)

One call (wired per connection by :mod:`adapters.phone.media`):

* :mod:`adapters.phone.stream` — the websocket: typed events in, text frames out
* :mod:`adapters.phone.call` — the coordinator: acts on the caller's turns
* :mod:`adapters.phone.inbound` — caller audio -> turn events; speech recognition
* :mod:`adapters.phone.answer` — one engine turn's typed events -> sentences (and withdrawals)
* :mod:`adapters.phone.speaker` — replies -> TTS -> playback; heard/cut bookkeeping
* :mod:`adapters.phone.bargein`, :mod:`adapters.phone.dtmf`, :mod:`adapters.phone.actions`
  — barge-in traces, DTMF entry, transfer / hang-up through the outbox
* :mod:`adapters.phone.tasks`, :mod:`adapters.phone.failures` — the call's tasks; logging
  failures without user data
"""
