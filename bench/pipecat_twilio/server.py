"""A Pipecat voice bot behind a Twilio Media Streams websocket, for side-by-side benchmarks.

    .venv-pipecat/bin/python bench/pipecat_twilio/server.py --port 8765
    # then point the simulated Twilio caller at ws://127.0.0.1:8765/ws

Runs in its own virtualenv (``bench/pipecat_twilio/setup.sh``), not the
project's: it imports ``pipecat`` (pip ``pipecat-ai``, written for 1.14.0).

Each websocket connection gets the pipeline Pipecat's Twilio examples build::

    transport.input() -> STT -> user aggregator (Silero VAD, turn detection,
    interruptions) -> LLM stand-in -> TTS -> transport.output() -> assistant aggregator

with the same offline stand-ins as the gateway's default stack:

* STT: PocketSphinx 5, its generic US English model, run on each VAD segment
  in a thread (a ``SegmentedSTTService``);
* TTS: ``espeak-ng -v en-us`` in a subprocess, streamed and resampled to
  8 kHz by Pipecat's TTS base (which also does the sentence aggregation);
* LLM: a processor that answers every user turn with a fixed two-sentence
  reply, pushed as streamed ``LLMTextFrame`` tokens between
  ``LLMFullResponseStartFrame`` / ``LLMFullResponseEndFrame``.

Protocol: the client sends Twilio's ``connected`` (optional) and ``start``
messages first; ``start.streamSid`` is echoed in everything the server sends.
The server sends ``media`` (8 kHz mu-law, base64) and, when the caller barges
in, ``clear``. It never sends ``mark`` and ignores the client's ``mark`` and
``stop``; close the websocket to end the call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import struct
import sys
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import soxr
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from loguru import logger
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMRunFrame,
    LLMTextFrame,
    TranscriptionFrame,
    VADUserStartedSpeakingFrame,
    VADUserStoppedSpeakingFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService, STTService
from pipecat.services.tts_service import TTSService
from pipecat.transcriptions.language import Language
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

GREETING = "Thanks for calling Spa del Sol! How can I help you today?"
REPLY = "Sure, I can help you book that. What name should I put the booking under?"

TWILIO_SAMPLE_RATE = 8000
"""Pipeline input and output rate, as in Pipecat's Twilio examples (no resampling in the serializer)."""

# --------------------------------------------------------------------------- STT: PocketSphinx

POCKETSPHINX_RATE = 16000
"""The generic en-us acoustic model is a 16 kHz model; 8 kHz segments are upsampled."""

NOISE_FLOOR_RMS = 60.0
"""White noise (int16 RMS) mixed in before decoding, as the gateway's PocketSphinxSTT does.

Upsampled telephone audio and synthetic speech have digital silence and an
empty 4-8 kHz band that the acoustic model never saw in training; a faint
floor keeps recognition from falling apart. It costs nothing measurable.
"""


SLICE_BYTES = POCKETSPHINX_RATE * 2 * 20 // 1000
"""Feed PocketSphinx 20 ms at a time, as the gateway does.

``Decoder.process_raw`` holds the GIL for its whole call (~0.4x real time
here). One call on a 3 s segment would freeze the event loop, and with it
the VAD, the interruption path and outgoing audio, for over a second.
"""


def feed_slices(decoder: Any, pcm16k: bytes) -> None:
    for start in range(0, len(pcm16k), SLICE_BYTES):
        decoder.process_raw(pcm16k[start : start + SLICE_BYTES], False, False)


class _DecoderPool:
    """Idle PocketSphinx decoders, shared by all calls (loading one takes a few hundred ms)."""

    def __init__(self) -> None:
        import pocketsphinx

        root = Path(pocketsphinx.get_model_path()) / "en-us"
        self._config: dict[str, Any] = {
            "hmm": str(root / "en-us"),
            "lm": str(root / "en-us.lm.bin"),
            "dict": str(root / "cmudict-en-us.dict"),
            "samprate": POCKETSPHINX_RATE,
            # Same decoder settings as the gateway: no second (flat-lexicon)
            # pass, which costs ~100 ms per utterance.
            "fwdflat": False,
        }
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    def acquire(self) -> Any:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        from pocketsphinx import Decoder

        return Decoder(**self._config, logfn="/dev/null")

    def release(self, decoder: Any) -> None:
        with self._lock:
            self._idle.append(decoder)

    def decode(self, pcm16: bytes, sample_rate: int, noise_rms: float) -> str:
        """Recognise one segment of 16-bit mono PCM (blocking; run it in a thread)."""
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
        if sample_rate != POCKETSPHINX_RATE:
            samples = soxr.resample(samples, sample_rate, POCKETSPHINX_RATE)
        if noise_rms:
            samples += np.random.default_rng().standard_normal(samples.size) * noise_rms
        audio = np.clip(samples, -32768, 32767).astype(np.int16).tobytes()
        decoder = self.acquire()
        try:
            decoder.start_utt()
            feed_slices(decoder, audio)
            decoder.end_utt()
            hyp = decoder.hyp()
        finally:
            self.release(decoder)
        return hyp.hypstr.strip() if hyp is not None else ""


class PocketSphinxSegmentedSTTService(SegmentedSTTService):
    """Transcribes each VAD segment with PocketSphinx in a worker thread.

    ``SegmentedSTTService`` buffers the caller's audio between the VAD's
    start and stop events (with ~1 s of pre-roll and 0.5 s of padding) and
    marks every transcript as final, so the turn ends as soon as it arrives.
    """

    def __init__(self, *, pool: _DecoderPool, noise_floor_rms: float = NOISE_FLOOR_RMS, **kwargs):
        super().__init__(
            settings=STTSettings(model="pocketsphinx-en-us", language=Language.EN_US),
            # The turn-stop strategies use this only as a safety net for
            # transcripts that are not final; ours always are.
            ttfs_p99_latency=1.0,
            **kwargs,
        )
        self._pool = pool
        self._noise_floor_rms = noise_floor_rms

    @property
    def wants_wav_segments(self) -> bool:
        """Take segments as raw 16-bit PCM, not WAV."""
        return False

    def can_generate_metrics(self) -> bool:
        return True

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        await self.start_processing_metrics()
        started = time.perf_counter()
        try:
            text = await asyncio.to_thread(
                self._pool.decode, audio, self.sample_rate, self._noise_floor_rms
            )
        except Exception as exc:
            yield ErrorFrame(error=f"pocketsphinx failed: {exc}")
            return
        finally:
            await self.stop_processing_metrics()
        seconds = len(audio) / 2 / self.sample_rate
        took_ms = (time.perf_counter() - started) * 1000
        logger.info(f"transcript {text!r}: {seconds:.2f} s of audio decoded in {took_ms:.0f} ms")
        if text:
            yield TranscriptionFrame(text, self._user_id, time_now_iso8601(), Language.EN_US)


class PocketSphinxStreamingSTTService(STTService):
    """``--stt streaming``: feeds PocketSphinx while the caller speaks, as the gateway does.

    An alternative to the segmented service that takes batch decoding after
    the VAD stop out of the reply latency: audio is pushed into the decoder frame by frame (in one
    worker thread per call, off the event loop) from the VAD start (with 1 s
    of pre-roll, as ``SegmentedSTTService`` keeps), and the VAD stop only
    finishes the utterance. The transcript is final, like the segmented one.
    """

    PREROLL_SECS = 1.0

    def __init__(self, *, pool: _DecoderPool, noise_floor_rms: float = NOISE_FLOOR_RMS, **kwargs):
        super().__init__(
            settings=STTSettings(model="pocketsphinx-en-us", language=Language.EN_US),
            ttfs_p99_latency=1.0,
            **kwargs,
        )
        self._pool = pool
        self._noise_floor_rms = noise_floor_rms
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pocketsphinx")
        self._preroll = bytearray()
        self._in_utterance = False
        self._started = 0.0
        # Touched only in the executor thread:
        self._decoder: Any = None
        self._resampler: Any = None
        self._rng = np.random.default_rng()

    def can_generate_metrics(self) -> bool:
        return True

    # ---- executor thread

    def _feed(self, pcm16: bytes, last: bool = False) -> None:
        if self._decoder is None:
            return  # _begin failed; _finish reports an empty transcript
        samples = np.frombuffer(pcm16, dtype=np.int16).astype(np.float32)
        samples = self._resampler.resample_chunk(samples, last=last)
        if self._noise_floor_rms:
            samples = samples + self._rng.standard_normal(samples.size) * self._noise_floor_rms
        audio = np.clip(samples, -32768, 32767).astype(np.int16).tobytes()
        feed_slices(self._decoder, audio)

    def _begin(self, preroll: bytes) -> None:
        decoder = self._pool.acquire()
        decoder.start_utt()  # if this raises, the decoder is dropped and the turn has no text
        self._decoder = decoder
        self._resampler = soxr.ResampleStream(
            self.sample_rate, POCKETSPHINX_RATE, 1, dtype="float32"
        )
        self._feed(preroll)

    def _finish(self) -> str:
        decoder = self._decoder
        if decoder is None:
            return ""
        try:
            self._feed(b"", last=True)  # flush the resampler
        finally:
            self._decoder = None
            decoder.end_utt()  # always, so the decoder goes back to the pool idle
        try:
            hyp = decoder.hyp()
        finally:
            self._pool.release(decoder)
        return hyp.hypstr.strip() if hyp is not None else ""

    # ---- event loop

    def _submit(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def run_stt(self, audio: bytes) -> AsyncGenerator[Frame | None, None]:
        if self._in_utterance:
            self._submit(self._feed, audio)  # ordered by the single worker thread
        else:
            self._preroll += audio
            keep = int(self.PREROLL_SECS * self.sample_rate) * 2
            del self._preroll[: max(0, len(self._preroll) - keep)]
        return
        yield  # an async generator that yields nothing

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, VADUserStartedSpeakingFrame) and not self._in_utterance:
            self._in_utterance = True
            preroll = bytes(self._preroll)
            self._preroll.clear()
            self._submit(self._begin, preroll)
        elif isinstance(frame, VADUserStoppedSpeakingFrame) and self._in_utterance:
            self._in_utterance = False
            self._started = time.perf_counter()
            self.create_task(self._push_transcript(self._submit(self._finish)))

    async def _push_transcript(self, result: asyncio.Future[str]) -> None:
        await self.start_processing_metrics()
        try:
            text = await result
        except Exception as exc:
            await self.push_error(f"pocketsphinx failed: {exc}", exception=exc)
            return
        finally:
            await self.stop_processing_metrics()
        took_ms = (time.perf_counter() - self._started) * 1000
        logger.info(f"transcript {text!r}: utterance finished {took_ms:.0f} ms after the VAD stop")
        if text:
            await self.push_frame(
                TranscriptionFrame(
                    text, self._user_id, time_now_iso8601(), Language.EN_US, finalized=True
                )
            )

    async def cleanup(self) -> None:
        await super().cleanup()
        self._executor.submit(self._finish)
        self._executor.shutdown(wait=False)


# --------------------------------------------------------------------------- TTS: espeak-ng


async def _read_wav_header(stream: asyncio.StreamReader) -> int:
    """Consume RIFF/WAVE chunks up to ``data``; return the sample rate (espeak writes 16-bit mono)."""
    riff = await stream.readexactly(12)
    if riff[:4] != b"RIFF" or riff[8:12] != b"WAVE":
        raise RuntimeError("espeak-ng did not write a RIFF/WAVE header")
    rate = 0
    while True:
        chunk_id, size = struct.unpack("<4sI", await stream.readexactly(8))
        if chunk_id == b"data":
            return rate
        body = await stream.readexactly(size + (size & 1))
        if chunk_id == b"fmt ":
            _tag, _channels, rate = struct.unpack("<HHI", body[:8])


class EspeakTTSService(TTSService):
    """``espeak-ng --stdout`` in a subprocess per sentence, streamed as it is written.

    The text goes through stdin (no option injection). The base class
    aggregates LLM tokens into sentences, pushes TTSStarted/StoppedFrames and
    resamples espeak's 22.05 kHz output to the pipeline's 8 kHz.
    """

    def __init__(
        self,
        *,
        voice: str = "en-us",
        words_per_minute: int = 165,
        pitch: int = 50,
        chunk_ms: int = 100,
        **kwargs,
    ):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model="espeak-ng", voice=voice, language=None),
            **kwargs,
        )
        executable = shutil.which("espeak-ng")
        if not executable:
            raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
        self._argv = [executable, "--stdout", "-v", voice, "-s", str(words_per_minute)]
        self._argv += ["-p", str(pitch)]
        self._chunk_ms = chunk_ms

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        proc = await asyncio.create_subprocess_exec(
            *self._argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            assert proc.stdin is not None and proc.stdout is not None
            stdout = proc.stdout
            await self.start_tts_usage_metrics(text)
            proc.stdin.write(text.encode("utf-8"))
            await proc.stdin.drain()
            proc.stdin.close()
            rate = await _read_wav_header(stdout)
            chunk_bytes = max(2, rate * self._chunk_ms // 1000 * 2)

            async def pcm_chunks() -> AsyncIterator[bytes]:
                while data := await stdout.read(chunk_bytes):
                    yield data

            async for frame in self._stream_audio_frames_from_iterator(
                pcm_chunks(), in_sample_rate=rate, context_id=context_id
            ):
                await self.stop_ttfb_metrics()
                yield frame
        except (RuntimeError, asyncio.IncompleteReadError) as exc:
            yield ErrorFrame(error=f"espeak-ng failed: {exc}")
        finally:
            await self.stop_ttfb_metrics()
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


# --------------------------------------------------------------------------- LLM stand-in


class CannedReceptionistLLM(FrameProcessor):
    """Answers each context the user aggregator pushes, like an instant LLM would.

    The first inference (``LLMRunFrame`` at connect, no user message yet) gets
    the greeting; every later one gets the fixed two-sentence reply. The text
    is streamed as word tokens so the TTS service aggregates sentences exactly
    as it does with a real LLM.
    """

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            if frame.speculation:
                return  # not produced by the default turn strategies
            said = any(
                m.get("role") == "user" for m in frame.context.get_messages() if isinstance(m, dict)
            )
            text = REPLY if said else GREETING
            await self.push_frame(LLMFullResponseStartFrame())
            for token in re.findall(r"\s*\S+", text):
                await self.push_frame(LLMTextFrame(token))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


# --------------------------------------------------------------------------- the call


def _turn_strategies(args: argparse.Namespace) -> UserTurnStrategies | None:
    if args.turn == "smart":
        return None  # Pipecat's default: Smart Turn v3 (local ONNX) on top of the VAD
    return UserTurnStrategies(
        stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=args.user_speech_timeout)]
    )


async def _read_twilio_start(websocket: WebSocket) -> dict[str, Any]:
    """Read Twilio's opening messages (``connected``, then ``start``); return ``start``."""
    for _ in range(4):
        message = json.loads(await websocket.receive_text())
        event = message.get("event")
        if event == "start":
            return dict(message["start"])
        if event != "connected":
            raise ValueError(f"expected a Twilio 'connected' or 'start' message, got {event!r}")
    raise ValueError("no Twilio 'start' message")


async def run_call(websocket: WebSocket, args: argparse.Namespace, pool: _DecoderPool) -> None:
    start = await _read_twilio_start(websocket)
    stream_sid, call_sid = start["streamSid"], start.get("callSid")
    logger.info(f"call {call_sid} stream {stream_sid}: started")

    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        # No Twilio credentials: don't try to end the call over Twilio's REST API.
        params=TwilioFrameSerializer.InputParams(auto_hang_up=False),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
        ),
    )
    stt: STTService
    if args.stt == "streaming":
        stt = PocketSphinxStreamingSTTService(pool=pool)
    else:
        stt = PocketSphinxSegmentedSTTService(pool=pool)
    tts = EspeakTTSService()
    llm = CannedReceptionistLLM()
    context = LLMContext()
    user_aggregator, assistant_aggregator = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            # Pipecat's defaults: confidence 0.7, start_secs 0.2, stop_secs 0.2, min_volume 0.6.
            vad_analyzer=SileroVADAnalyzer(),
            user_turn_strategies=_turn_strategies(args),
        ),
    )
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            user_aggregator,
            llm,
            tts,
            transport.output(),
            assistant_aggregator,
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=TWILIO_SAMPLE_RATE,
            audio_out_sample_rate=TWILIO_SAMPLE_RATE,
            enable_metrics=args.metrics,
        ),
    )

    @transport.event_handler("on_client_connected")
    async def on_client_connected(_transport: Any, _client: Any) -> None:
        await worker.queue_frames([LLMRunFrame()])  # the greeting

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport: Any, _client: Any) -> None:
        logger.info(f"call {call_sid}: caller hung up")
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()
    logger.info(f"call {call_sid}: ended")


def make_app(args: argparse.Namespace) -> FastAPI:
    pool = _DecoderPool()
    pool.release(pool.acquire())  # load the model once, before the first call
    app = FastAPI()

    @app.websocket("/ws")
    async def twilio_media_stream(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            await run_call(websocket, args, pool)
        except WebSocketDisconnect:
            logger.info("caller left before the call started")
        except ValueError as exc:
            logger.warning(f"bad Twilio handshake: {exc}")
            await websocket.close(code=1002)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument(
        "--turn",
        choices=["smart", "timeout"],
        default="smart",
        help="end-of-turn detection: 'smart' = Pipecat's default (Silero VAD + Smart Turn v3); "
        "'timeout' = Silero VAD + SpeechTimeoutUserTurnStopStrategy",
    )
    parser.add_argument(
        "--user-speech-timeout",
        type=float,
        default=0.6,
        help="with --turn timeout: extra silence after the VAD stop, s (Pipecat default 0.6)",
    )
    parser.add_argument(
        "--stt",
        choices=["segmented", "streaming"],
        default="segmented",
        help="'segmented' = SegmentedSTTService, the whole segment decoded after the VAD stop "
        "(default); 'streaming' = PocketSphinx fed while the caller speaks, as the gateway does",
    )
    parser.add_argument("--metrics", action="store_true", help="enable Pipecat's metrics frames")
    parser.add_argument("--log-level", default="INFO", help="loguru level (DEBUG is very chatty)")
    args = parser.parse_args()

    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    logger.info(
        f"turn detection: {args.turn}; STT: {args.stt}; listening on ws://{args.host}:{args.port}/ws"
    )
    uvicorn.run(make_app(args), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
