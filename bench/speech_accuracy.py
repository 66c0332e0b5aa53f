"""Phone speech recognition: word error rate, slot accuracy and decode speed.

Each utterance a receptionist hears (a name, a phone number, an email, a time,
a service, a yes/no, a correction) is spoken by Piper (``en_US-joe-medium``;
``--voices both`` adds espeak-ng), sent through the phone path (resample to
8 kHz, mu-law encode and decode, back to PCM16), and recognised by every
installed configuration:

* ``sphinx``: PocketSphinx with the domain model built from the Spa del Sol
  phrases (business name, services, aliases) and the backchannel words;
* ``whisper-30s``: Whisper tiny.en, faster-whisper's normal 30 s window
  (:meth:`FasterWhisperSTT._decode_long`);
* ``whisper-short``: the short encoder window (:meth:`FasterWhisperSTT._decode`);
* ``whisper-short+ctx``: the short window with the slot's example answer as
  prompt (``_decode(audio, stt_context(slot))``), as a call decodes.

Figures per configuration and voice:

* **WER**, word error rate against the sentence given to the synthesiser,
  after normalising both sides the same way: lower case; ``a.m.``/``p.m.``
  -> ``am``/``pm``; ``@`` -> ``at``, a dot inside a word (``example.com``)
  -> ``dot``, ``_`` -> ``underscore``; other punctuation (hyphens, colons,
  commas) -> space; number words -> digits (``text_to_num``: "ten thirty"
  -> ``10 30``), "oh" next to a digit -> ``0``, "double"/"triple" before a
  digit -> the digit repeated; then every digit string is split into single
  digits and every run of two or more single letters is joined into a word.
  So "six one seven, five five five" and "617-555" both become
  ``6 1 7 5 5 5``, "L O P E Z" and "L-O-P-E-Z" and "Lopez" all ``lopez``,
  "maria dot lopez at example dot com" and ``maria.lopez@example.com`` the
  same six words, "3 p.m." and "three pm" ``3 pm``. Formatting choices are
  not errors; wrong words and wrong digits are.
* **slot accuracy** per slot type: the transcript goes through the flow's
  phone-channel reading (:func:`purposes.lead_capture.spoken.typed` with the
  slot asked) and the parsers in the order ``SlotFiller.extract`` uses them
  (``find_email``, ``find_phone`` with region US, ``find_when``,
  ``find_service``, ``find_name``; ``is_yes``/``is_no`` for confirmations);
  the value for the slot asked must equal the expected one: E.164 phone,
  normalised email, the service's canonical name, the name ignoring case and accents (``López`` = ``Lopez``: accents cannot be heard),
  the weekday and clock time (relative to a fixed Wednesday 10:00,
  America/Los_Angeles), "yes"/"no". The ``reference text`` row applies the
  same parsers to the sentence itself: the parsers' ceiling, no recogniser.
* **latency** p50/p95: decode time of one whole utterance, one at a time
  (Whisper: the ``_decode*`` call on the caller's thread, one CPU thread;
  PocketSphinx: ``transcribe``, on an executor thread), and the **real-time
  factor**: total decode time / total audio time.

    .venv/bin/python -m bench.speech_accuracy [--quick] [--voices piper|espeak|both]
                                              [--json FILE] [--verbose] [--models-dir DIR]

Synthetic speech from one or two voices on a clean line is far easier than
real callers: read the figures as a comparison between configurations.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
from text_to_num import alpha2digit

from channels.phone.endpointing import stt_context
from engine.config import ClientConfig, Service, load_client
from providers.speech import models as speech_models
from providers.speech.audio import pcm16_to_float32, pcm16_to_ulaw, resample, ulaw_to_pcm16
from providers.speech.pocketsphinx_stt import PocketSphinxSTT
from providers.speech.whisper_stt import FasterWhisperSTT
from purposes.lead_capture.spoken import typed
from purposes.lead_capture.validators import (
    find_email,
    find_name,
    find_phone,
    find_service,
    find_when,
    is_no,
    is_yes,
)

ROOT = Path(__file__).resolve().parent.parent
CLIENT_DIR = ROOT / "clients" / "spa-del-sol"
MODELS_DIR = ROOT / "data" / "models"
PIPER_VOICE = "en_US-joe-medium"
WHISPER_MODEL = "tiny.en"
REGION = "US"
NOW = datetime(2026, 3, 4, 10, 0, tzinfo=ZoneInfo("America/Los_Angeles"))
"""'Now' for time slots: a Wednesday morning."""

SLOTS = ("name", "phone", "email", "time", "service", "confirmation")
SERVICES = ("Swedish Massage", "Deep Tissue Massage", "Signature Facial", "Manicure")


@dataclass(frozen=True, slots=True)
class Case:
    """One caller utterance: what the bot asked (``slot``) and what it should read.

    ``expected``: the canonical value (E.164 phone, normalised email, name as
    written, ``"Fri 15:00"``, service name, ``"yes"``/``"no"``); None when no
    slot was asked. ``tag`` says what makes the case interesting.
    """

    text: str
    slot: str | None
    expected: str | None
    tag: str = ""


CASES: tuple[Case, ...] = (
    # names
    Case("My name is Maria Lopez.", "name", "Maria Lopez"),
    Case("It's Lopez, L O P E Z.", "name", "Lopez", "spelled"),
    Case("This is James O'Brien.", "name", "James O'Brien"),
    Case("My name is Nguyen Van An.", "name", "Nguyen Van An", "non-English"),
    Case("Siobhan Murphy.", "name", "Siobhan Murphy", "non-English"),
    Case("I'm Priya Raghunathan.", "name", "Priya Raghunathan", "non-English"),
    Case("My name is Oluwaseun Adeyemi.", "name", "Oluwaseun Adeyemi", "non-English"),
    Case("It's Chen, C H E N.", "name", "Chen", "spelled"),
    Case("Sure, it's David Kowalski.", "name", "David Kowalski"),
    Case("Zoe Schmidt, that's S C H M I D T.", "name", "Zoe Schmidt", "spelled"),
    # phone numbers
    Case(
        "My number is six one seven, five five five, zero one four seven.",
        "phone",
        "+16175550147",
        "grouped",
    ),
    Case("It's four one five five five five oh one three four.", "phone", "+14155550134", "oh"),
    Case("Six one seven, double five five, oh one four eight.", "phone", "+16175550148", "double"),
    Case("two one two five five five zero one nine nine", "phone", "+12125550199", "digits"),
    Case(
        "Sure, it's eight five eight, five five five, one two three four.",
        "phone",
        "+18585551234",
        "grouped",
    ),
    Case(
        "The best number is three one two, triple five, six seven eight nine.",
        "phone",
        "+13125556789",
        "triple",
    ),
    Case(
        "No, it's six one seven, five five five, oh one four eight.",
        "phone",
        "+16175550148",
        "correction",
    ),
    Case(
        "Sorry, I meant nine one seven five five five two two three three.",
        "phone",
        "+19175552233",
        "correction",
    ),
    # emails
    Case("It's maria dot lopez at example dot com.", "email", "maria.lopez@example.com"),
    Case("m a r i a dot l o p e z at gmail dot com", "email", "maria.lopez@gmail.com", "spelled"),
    Case("My email is james at obrien dot net.", "email", "james@obrien.net"),
    Case("priya underscore r at yahoo dot com", "email", "priya_r@yahoo.com", "underscore"),
    Case("j o h n at example dot org", "email", "john@example.org", "spelled"),
    Case("chen dot wei at hotmail dot com", "email", "chen.wei@hotmail.com"),
    # times (now: Wednesday 10:00)
    Case("Friday at 3 pm.", "time", "Fri 15:00"),
    Case("Tomorrow at ten thirty.", "time", "Thu 10:30"),
    Case("Could I come in Saturday morning at eleven?", "time", "Sat 11:00"),
    Case("Next Tuesday at two in the afternoon.", "time", "Tue 14:00"),
    Case("Thursday at noon.", "time", "Thu 12:00"),
    Case("Monday at nine a.m.", "time", "Mon 09:00"),
    Case("How about the day after tomorrow at four thirty pm?", "time", "Fri 16:30"),
    # services
    Case("I'd like to book a Swedish massage.", "service", "Swedish Massage"),
    Case("Can I get a deep tissue massage?", "service", "Deep Tissue Massage"),
    Case("Do you do facials?", "service", "Signature Facial"),
    Case("Just a manicure, please.", "service", "Manicure"),
    Case("A sports massage.", "service", "Deep Tissue Massage", "alias"),
    Case("Something relaxing, maybe a full body massage.", "service", "Swedish Massage", "alias"),
    # yes / no
    Case("Yes, that's right.", "confirmation", "yes"),
    Case("No, that's wrong.", "confirmation", "no"),
    Case("Yeah, go ahead and book it.", "confirmation", "yes"),
    Case("Nope.", "confirmation", "no"),
    # nothing asked
    Case("Hi, I'd like to make an appointment at Spa del Sol.", None, None),
    Case("Can I speak to someone?", None, None),
    Case("What are your opening hours on Sunday?", None, None),
)

QUICK_CASES: tuple[Case, ...] = CASES[::3]
"""The ``--quick`` subset: every third case (every slot type is in it)."""


_PHONE = re.compile(r"^\+1[2-9]\d{2}[2-9]\d{6}$")
_EMAIL = re.compile(r"^[a-z0-9._+-]+@[a-z0-9-]+(\.[a-z0-9-]+)*\.[a-z]{2,}$")
_TIME = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) ([01]\d|2[0-3]):[0-5]\d$")
_NAME = re.compile(r"^[^\W\d_][\w'’ -]*$")


def check_cases(cases: Sequence[Case] = CASES) -> list[str]:
    """Problems with the case table (empty when it is sound): unknown slots,
    expected values that do not fit their slot, duplicates, too few cases."""
    problems: list[str] = []
    if len(cases) < 36:
        problems.append(f"only {len(cases)} cases; want at least 36")
    seen: set[str] = set()
    for case in cases:
        label = repr(case.text)
        if not case.text.strip():
            problems.append("a case with no text")
        if case.text in seen:
            problems.append(f"{label}: duplicate")
        seen.add(case.text)
        if case.slot is None:
            if case.expected is not None:
                problems.append(f"{label}: a value expected but no slot asked")
            continue
        if case.slot not in SLOTS:
            problems.append(f"{label}: unknown slot {case.slot!r}")
            continue
        value = case.expected
        if value is None:
            problems.append(f"{label}: slot {case.slot} without an expected value")
            continue
        fits = {
            "phone": bool(_PHONE.match(value)),
            "email": bool(_EMAIL.match(value)),
            "time": bool(_TIME.match(value)),
            "service": value in SERVICES,
            "confirmation": value in ("yes", "no"),
            "name": bool(_NAME.match(value)) and value == value.strip(),
        }[case.slot]
        if not fits:
            problems.append(f"{label}: {value!r} is not a canonical {case.slot}")
    covered = {c.slot for c in cases}
    problems += [f"no {slot} case" for slot in SLOTS if slot not in covered]
    if QUICK_CASES and {c.slot for c in QUICK_CASES} != covered:
        problems.append("the --quick subset misses a slot type")
    return problems


# --------------------------------------------------------------------------- WER


def normalize_words(text: str) -> list[str]:
    """``text`` as comparable words (see the module doc)."""
    t = text.casefold().replace("’", "'")
    t = re.sub(r"\b([ap])\.?\s?m\b\.?", r"\1m", t)
    t = t.replace("@", " at ").replace("_", " underscore ")
    t = re.sub(r"(?<=[a-z0-9])\.(?=[a-z0-9])", " dot ", t)
    t = re.sub(r"(\d)([a-z])", r"\1 \2", t)
    t = re.sub(r"([a-z])(\d)", r"\1 \2", t)
    t = re.sub(r"[^a-z0-9' ]+", " ", t)
    t = str(alpha2digit(t, "en"))
    tokens = [w.strip("'") for w in t.split()]
    tokens = [w for w in tokens if w]
    out: list[str] = []
    for i, tok in enumerate(tokens):
        prev = tokens[i - 1] if i else ""
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in ("oh", "o") and (prev[-1:].isdigit() or nxt[:1].isdigit()):
            out.append("0")
        elif tok in ("double", "triple") and (nxt[:1].isdigit() or nxt in ("oh", "o")):
            digit = "0" if nxt in ("oh", "o") else nxt[0]
            out.extend(digit * (1 if tok == "double" else 2))  # the next token adds one
        elif tok.isdigit():
            out.extend(tok)
        else:
            out.append(tok)
    joined: list[str] = []
    run: list[str] = []
    for tok in [*out, ""]:
        if len(tok) == 1 and tok.isalpha():
            run.append(tok)
            continue
        if len(run) >= 2:
            joined.append("".join(run))
        else:
            joined.extend(run)
        run = []
        if tok:
            joined.append(tok)
    return joined


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


# --------------------------------------------------------------------------- slots


def _canonical_when(text: str) -> str | None:
    when, _rest = find_when(text, NOW)
    if when is None or when.day is None or when.hour is None:
        return None
    return f"{when.day:%a} {when.hour:02d}:{when.minute:02d}"


def extract(slot: str | None, transcript: str, services: tuple[Service, ...]) -> str | None:
    """The value the flow would read for ``slot`` from ``transcript`` on a call."""
    if slot is None:
        return None
    text = typed(transcript, slot)
    if slot == "confirmation":
        return "yes" if is_yes(text) else "no" if is_no(text) else None
    email, _err, rest = find_email(text, slot == "email")
    phone, _err, rest = find_phone(rest, REGION, slot == "phone")
    if slot == "email":
        return email
    if slot == "phone":
        return phone
    if slot == "time":
        return _canonical_when(rest)
    _when, rest = find_when(rest, NOW)
    if slot == "service":
        svc, _score, _near = find_service(rest, services)
        return svc.name if svc else None
    return find_name(text, expecting=False) or find_name(rest, expecting=True)


def _fold(name: str) -> str:
    """A name as heard: case, accents and apostrophe style ignored."""
    decomposed = unicodedata.normalize("NFKD", name.replace("’", "'").casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def slot_ok(case: Case, value: str | None) -> bool:
    if case.expected is None or value is None:
        return False
    if case.slot == "name":
        return _fold(value) == _fold(case.expected)
    return value == case.expected


# --------------------------------------------------------------------------- audio


@dataclass
class Utterance:
    case: Case
    voice: str
    pcm8k: bytes
    audio16k: np.ndarray[Any, np.dtype[np.float32]]

    @property
    def seconds(self) -> float:
        return len(self.pcm8k) / 2 / 8000


_SYNTH_CACHE: dict[tuple[str, str], tuple[bytes, int]] = {}


def synthesize(text: str, voice: str, models_dir: Path = MODELS_DIR) -> tuple[bytes, int]:
    """PCM16 and its rate for ``text`` in ``voice`` (cached in memory)."""
    from testkit.phone.audio import speak

    key = (voice, text)
    if key not in _SYNTH_CACHE:
        name = "espeak" if voice == "espeak" else PIPER_VOICE
        _SYNTH_CACHE[key] = speak(text, name, models_dir=models_dir)
    return _SYNTH_CACHE[key]


def phone_path(pcm: bytes, rate: int) -> bytes:
    """What a caller's audio becomes on the line: 8 kHz mu-law, decoded to PCM16."""
    return ulaw_to_pcm16(pcm16_to_ulaw(resample(pcm, rate, 8000)))


def prepare(cases: Sequence[Case], voice: str, models_dir: Path = MODELS_DIR) -> list[Utterance]:
    out: list[Utterance] = []
    for case in cases:
        pcm, rate = synthesize(case.text, voice, models_dir)
        line = phone_path(pcm, rate)
        out.append(Utterance(case, voice, line, pcm16_to_float32(resample(line, 8000, 16000))))
    return out


# --------------------------------------------------------------------------- running


@dataclass
class Result:
    case: Case
    transcript: str
    value: str | None
    ok: bool
    errors: int
    ref_words: int
    decode_s: float
    audio_s: float


@dataclass
class Row:
    config: str
    voice: str
    results: list[Result] = field(default_factory=list)

    def wer(self) -> float:
        ref = sum(r.ref_words for r in self.results)
        return sum(r.errors for r in self.results) / ref if ref else 0.0

    def slot_counts(self, slot: str | None = None) -> tuple[int, int]:
        asked = [r for r in self.results if r.case.slot and (slot is None or r.case.slot == slot)]
        return sum(r.ok for r in asked), len(asked)

    def latency_ms(self, q: float) -> float:
        times = sorted(r.decode_s * 1000 for r in self.results)
        if not times:
            return 0.0
        return float(np.percentile(times, q * 100))

    def rtf(self) -> float:
        audio = sum(r.audio_s for r in self.results)
        return sum(r.decode_s for r in self.results) / audio if audio else 0.0

    def summary(self) -> dict[str, Any]:
        ok, n = self.slot_counts()
        return {
            "config": self.config,
            "voice": self.voice,
            "wer": round(self.wer(), 4),
            "slot_accuracy": round(ok / n, 4) if n else None,
            "slots": {s: dict(zip(("ok", "n"), self.slot_counts(s), strict=True)) for s in SLOTS},
            "latency_ms_p50": round(self.latency_ms(0.5), 1),
            "latency_ms_p95": round(self.latency_ms(0.95), 1),
            "rtf": round(self.rtf(), 4),
            "cases": [
                {
                    "text": r.case.text,
                    "slot": r.case.slot,
                    "expected": r.case.expected,
                    "transcript": r.transcript,
                    "value": r.value,
                    "ok": r.ok,
                    "decode_ms": round(r.decode_s * 1000, 1),
                }
                for r in self.results
            ],
        }


def score(
    row: Row, utt: Utterance, transcript: str, decode_s: float, services: tuple[Service, ...]
) -> None:
    ref = normalize_words(utt.case.text)
    value = extract(utt.case.slot, transcript, services)
    row.results.append(
        Result(
            utt.case,
            transcript,
            value,
            slot_ok(utt.case, value),
            edit_distance(ref, normalize_words(transcript)),
            len(ref),
            decode_s,
            utt.seconds,
        )
    )


Decoder = Callable[[Utterance], str]


def run_sync(
    name: str, decode: Decoder, utts: Sequence[Utterance], services: tuple[Service, ...]
) -> Row:
    row = Row(name, utts[0].voice if utts else "")
    decode(utts[0])  # warm-up, not timed
    for utt in utts:
        started = time.perf_counter()
        text = decode(utt)
        score(row, utt, text, time.perf_counter() - started, services)
    return row


async def run_sphinx(
    stt: PocketSphinxSTT, utts: Sequence[Utterance], services: tuple[Service, ...]
) -> Row:
    row = Row("sphinx", utts[0].voice if utts else "")
    await stt.transcribe(utts[0].pcm8k, 8000)  # warm-up, not timed
    for utt in utts:
        started = time.perf_counter()
        transcript = await stt.transcribe(utt.pcm8k, 8000)
        score(row, utt, transcript.text, time.perf_counter() - started, services)
    return row


def reference_row(cases: Sequence[Case], services: tuple[Service, ...]) -> Row:
    row = Row("reference text", "-")
    for case in cases:
        value = extract(case.slot, case.text, services)
        n = len(normalize_words(case.text))
        row.results.append(Result(case, case.text, value, slot_ok(case, value), 0, n, 0.0, 0.0))
    return row


def client_phrases(client: ClientConfig) -> tuple[list[str], list[str]]:
    """(phrases, extra words) as the phone channel biases the recogniser
    (see ``channels.phone.media.speech_specs``)."""
    phrases = [client.name]
    for service in client.services:
        phrases += [service.name, *service.aliases]
    phrases += list(client.voice.stt.phrases)
    return phrases, list(client.channels.phone.turn_taking.backchannels)


# --------------------------------------------------------------------------- report


def _pct(ok: int, n: int) -> str:
    return f"{ok}/{n} {ok / n:4.0%}" if n else "-"


def print_tables(rows: Sequence[Row], reference: Row) -> None:
    print("\nWord error rate, slot accuracy and decode speed (8 kHz mu-law phone path)\n")
    head = f"| {'configuration':<18} | {'voice':<6} | {'WER':>6} | {'slots':>11} | {'p50 ms':>7} | {'p95 ms':>7} | {'RTF':>5} |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for row in rows:
        ok, n = row.slot_counts()
        print(
            f"| {row.config:<18} | {row.voice:<6} | {row.wer():6.1%} | {_pct(ok, n):>11} | "
            f"{row.latency_ms(0.5):7.0f} | {row.latency_ms(0.95):7.0f} | {row.rtf():5.3f} |"
        )
    print("\nSlot accuracy per slot type (value read by the flow's parsers == expected)\n")
    head = f"| {'configuration':<18} | {'voice':<6} | " + " | ".join(f"{s:>12}" for s in SLOTS)
    head += " |"
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for row in [reference, *rows]:
        cells = " | ".join(f"{_pct(*row.slot_counts(s)):>12}" for s in SLOTS)
        print(f"| {row.config:<18} | {row.voice:<6} | {cells} |")


def print_misses(rows: Sequence[Row], reference: Row, verbose: bool) -> None:
    for row in [reference, *rows]:
        shown = [r for r in row.results if verbose or (r.case.slot and not r.ok)]
        if not shown:
            continue
        title = "transcripts" if verbose else "slot misses"
        print(f"\n{title}: {row.config} ({row.voice})")
        for r in shown:
            mark = "ok  " if r.ok else ("-   " if not r.case.slot else "MISS")
            print(
                f"  {mark} [{r.case.slot or '-'}] {r.case.text!r}\n"
                f"         -> {r.transcript!r} => {r.value!r}"
                + ("" if r.ok or not r.case.slot else f" (want {r.case.expected!r})")
            )


# --------------------------------------------------------------------------- main


async def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.speech_accuracy", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every third case only")
    parser.add_argument("--voices", choices=["piper", "espeak", "both"], default="piper")
    parser.add_argument("--json", type=Path, help="write the figures and transcripts here")
    parser.add_argument("--models-dir", type=Path, default=MODELS_DIR, help="installed models")
    parser.add_argument("--verbose", action="store_true", help="print every transcript")
    args = parser.parse_args(argv)

    problems = check_cases()
    if problems:
        raise SystemExit("case table problems:\n  " + "\n  ".join(problems))
    cases = QUICK_CASES if args.quick else CASES
    client, _problems = load_client(CLIENT_DIR)
    if client is None:
        raise SystemExit(f"cannot load {CLIENT_DIR}")
    services = client.services
    phrases, words = client_phrases(client)
    notes: list[str] = []

    voices = ["piper", "espeak"] if args.voices == "both" else [args.voices]
    prepared: dict[str, list[Utterance]] = {}
    for voice in voices:
        started = time.perf_counter()
        try:
            prepared[voice] = prepare(cases, voice, args.models_dir)
        except (FileNotFoundError, ImportError) as exc:
            notes.append(f"skipped voice {voice}: {exc}")
            print(f"SKIP voice {voice}: not installed ({exc})")
            continue
        audio_s = sum(u.seconds for u in prepared[voice])
        print(
            f"{voice}: {len(cases)} utterances, {audio_s:.1f} s of audio, "
            f"synthesised in {time.perf_counter() - started:.1f} s"
        )
    if not prepared:
        raise SystemExit("no voice to speak the cases: install espeak-ng or a Piper voice")

    started = time.perf_counter()
    sphinx = PocketSphinxSTT([*phrases, *words])
    await sphinx.warm_up()
    print(f"pocketsphinx domain model ready in {time.perf_counter() - started:.1f} s")
    whisper: FasterWhisperSTT | None = None
    folder = speech_models.resolve("whisper", WHISPER_MODEL, args.models_dir)
    if folder is None:
        notes.append(f"skipped Whisper rows: {WHISPER_MODEL} not installed in {args.models_dir}")
        print(f"SKIP Whisper rows: {WHISPER_MODEL} is not installed in {args.models_dir}")
    else:
        started = time.perf_counter()
        try:
            whisper = FasterWhisperSTT(str(folder), phrases=phrases)
        except Exception as exc:  # SpeechUnavailableError, or faster-whisper missing
            notes.append(f"skipped Whisper rows: {exc}")
            print(f"SKIP Whisper rows: {exc}")
        else:
            print(f"whisper {WHISPER_MODEL} loaded in {time.perf_counter() - started:.1f} s")

    decoders: dict[str, Decoder] = {}
    if whisper is not None:
        w = whisper
        decoders = {
            "whisper-30s": lambda u: w._decode_long(u.audio16k)[0],
            "whisper-short": lambda u: w._decode(u.audio16k)[0],
            "whisper-short+ctx": lambda u: w._decode(u.audio16k, stt_context(u.case.slot))[0],
        }
    rows: list[Row] = []
    started = time.perf_counter()
    for voice, utts in prepared.items():
        rows.append(await run_sphinx(sphinx, utts, services))
        for name, decode in decoders.items():
            row = run_sync(name, decode, utts, services)
            row.voice = voice
            rows.append(row)
    print(f"recognition done in {time.perf_counter() - started:.1f} s")

    reference = reference_row(cases, services)
    print_misses(rows, reference, args.verbose)
    print_tables(rows, reference)
    for note in notes:
        print(f"note: {note}")
    report = {
        "cases": len(cases),
        "quick": args.quick,
        "now": NOW.isoformat(),
        "notes": notes,
        "case_table": [asdict(c) for c in cases],
        "rows": [r.summary() for r in [reference, *rows]],
    }
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False))
        print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    asyncio.run(main())
