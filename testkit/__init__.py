"""Test-only helpers, shipped with the package for the tests, the benchmarks and
the ``gateway call`` command: a simulated caller over a fake Twilio media stream
(:mod:`testkit.phone`), scripted speech (:mod:`testkit.speech`), a local server
speaking Gemini's REST wire format (:mod:`testkit.gemini`) and an in-process
scripted model (:mod:`testkit.llm`). No production module imports them.
"""
