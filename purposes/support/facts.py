"""Questions the client's config answers: opening hours, services, durations, prices.

These never go to retrieval: ``config.yaml`` is the source of truth, and a
knowledge file that disagrees with it is stale. :func:`answer_fact` returns a
:class:`Fact` when it is sure the question is about one of these, else
``None`` so retrieval takes over ("is there parking?", "how late can I
cancel?", "do you take my insurance?", "are you open on Christmas?").

What it answers (times in the client's timezone, ``now`` converted to it):

- ``hours``: the week, compactly ("Mon–Wed 9 AM–7 PM, Thu–Fri 9 AM–9 PM,
  Sat 10 AM–5 PM, closed Sunday"), or given days ("what time do you close on
  Thursdays?", "are you open Sunday?", "when do you open tomorrow?", "are you
  open at 8pm on Friday?"). A day missing from ``business_hours`` is closed.
- ``open_now``: "are you open now?", with when it closes or opens next.
- ``price`` / ``duration``: of the services named (name or alias, typos
  tolerated with ``rapidfuzz`` as in lead capture's ``find_service``), or of
  every service when none is named ("what are your prices?"). A service named
  with a word the config does not know ("hot stone massage", "couples
  massage") is *not* matched to the nearest service: ``None``. A price asked
  for a service without one in the config is ``None`` too.
- ``services``: the list ("what services do you offer?"), or "yes, we offer…"
  for a listed service ("do you do facials?").

Prices use the currency of the client's ``locale`` region (``en-US`` -> $95,
``es-ES`` -> 95 €, ``en-GB`` -> £95) from a small table (``babel`` is not a
dependency); times are 12-hour for English locales, else 24-hour. Replies are
English. :attr:`Fact.spoken` is the same answer for text-to-speech (weekday
names in full, "95 dollars", no dashes).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal

from rapidfuzz import fuzz

from engine.config import DAYS, ClientConfig, OpeningHours, Service
from purposes.support.text import STOP_WORDS, word_set

__all__ = ["Fact", "FactKind", "answer_fact", "format_price"]

FactKind = Literal["hours", "open_now", "services", "price", "duration"]


@dataclass(frozen=True, slots=True)
class Fact:
    """An answer taken from the client's config.

    ``text``: one or two sentences for chat. ``spoken``: the same for voice
    (None when ``text`` reads aloud as it is). ``source``: where in the config
    it comes from (``config: business_hours``, ``config: services``).
    ``confidence`` in [0, 1]: 1.0 when sure; lower when a service name matched
    only approximately (the fuzzy score / 100).
    """

    text: str
    kind: FactKind
    source: str
    confidence: float = 1.0
    spoken: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence must be in [0, 1], got {self.confidence}")

    def for_voice(self) -> str:
        return self.spoken or self.text


# --- question patterns -------------------------------------------------------

# Topics the config does not hold even when hours or price words appear:
# retrieval (policies, holidays, extras) answers them, or nobody does.
_NOT_CONFIG = re.compile(
    r"\b(cancel\w*|reschedul\w*|refund\w*|deposits?|tips?|tipping|gratuit\w*|insur\w*|"
    r"gift ?(?:cards?|certificates?|vouchers?)|vouchers?|discounts?|coupons?|promo\w*|"
    r"members?(?:hip)?s?|packages?|park(?:ing)?|holidays?|christmas|xmas|thanksgiving|easter|"
    r"new year'?s?|july 4(?:th)?|fourth of july|labou?r day|memorial day|no[- ]?shows?|"
    r"polic(?:y|ies)|late (?:fee|for|arriv\w*)|(?:i'?m|be|being|running|arrive) late|"
    r"parties|party|groups?|wait ?list|delivery|shipping|payment plans?|financ\w*|"
    r"open (?:to|for) (?!business))\b"
)
_SUBJECT = r"(?:you|u|ya|y'all|you guys|you all|it|they|we|the (?:spa|salon|clinic|studio|business|shop|store|office|place|front desk))"
_HOURS = re.compile(
    r"\b(?:opening|business|working|office|operating|store|shop|spa|salon|clinic|open)\s+(?:hours|times?)\b"
    r"|\b(?:your|the|ur|what are|what're|what r)\s+hours\b(?!\s+(?:before|after|in advance|ahead|notice|prior))"
    r"|^\s*(?:hours|opening times?)\b"
    r"|\b(?:when|what time|what times|how late|how early|till when|until when|until what time|till what time)\b"
    r"[^.?!]*\b(?:open|close|closing|opening|shut|closed)\b"
    rf"|\b(?:are|is)\s+{_SUBJECT}\s+(?:\w+\s+)?(?:open|closed)\b"
    rf"|\b(?:do|does)\s+{_SUBJECT}\s+(?:\w+\s+)?(?:open|close|shut)\b"
    r"|\b(?:open|closed)\s+(?:on\s+|this\s+|next\s+)?(?:today|tonight|tomorrow|weekends?|weekdays?|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?)\b"
    r"|\b(?:opening|closing) (?:time|hour)s?\b|\bwhat days\b[^?]*\bopen\b"
)
_OTHER_THING_OPEN = re.compile(
    r"\b(?:is|are) (?:the|your) (?!spa|salon|clinic|studio|business|shop|store|office|place|front desk)"
    r"[a-z]+(?: [a-z]+)? (?:open|closed)\b"
)
_NOW = re.compile(
    r"\b(?:right now|now|currently|at the moment|atm|still open|open yet|this (?:minute|moment))\b"
)
_FOCUS_CLOSE = re.compile(
    r"\b(?:close|closing|closes|shut|how late|until|till|stay open|open until|open till)\b"
)
_FOCUS_OPEN = re.compile(
    r"\b(?:when do(?:es)? \w+(?: \w+)? open|what time do(?:es)? \w+(?: \w+)? open|opening time|"
    r"how early|open at what time|open from)\b"
)
_YES_NO = re.compile(r"^\s*(?:so\s+|and\s+|hi,?\s+|hey,?\s+)?(?:are|is|do|does|will|can|would)\b")
_DAY_WORDS = {
    "monday": "mon",
    "mon": "mon",
    "tuesday": "tue",
    "tue": "tue",
    "tues": "tue",
    "wednesday": "wed",
    "wed": "wed",
    "thursday": "thu",
    "thu": "thu",
    "thur": "thu",
    "thurs": "thu",
    "friday": "fri",
    "fri": "fri",
    "saturday": "sat",
    "sat": "sat",
    "sunday": "sun",
    "sun": "sun",
}
_DAY_RE = re.compile(
    r"\b(day after tomorrow|today|tonight|tomorrow|tmrw|weekends?|weekdays?|"
    r"(?:mon|tues|wednes|thurs|fri|satur|sun)days?|mon|tues?|wed|thur?s?|fri|sat|sun)\b\.?"
)
_CLOCK = re.compile(
    r"\b(?P<h>[01]?\d|2[0-3])(?::(?P<m>[0-5]\d))?\s*(?P<ampm>a\.?m\.?|p\.?m\.?)?(?=\W|$)"
    r"|\b(?P<noon>noon|midday|midnight)\b"
)
_FULL_NAMES = {
    "mon": "Monday",
    "tue": "Tuesday",
    "wed": "Wednesday",
    "thu": "Thursday",
    "fri": "Friday",
    "sat": "Saturday",
    "sun": "Sunday",
}

_PRICE = re.compile(
    r"\b(?:prices?|priced|pricing|costs?|costing|fees?|rates?|charges?|charged?|expensive|cheap\w*|"
    r"dollars?|euros?|pounds?|how much(?!\s+(?:time|notice|longer|earlier|early|ahead|in advance|"
    r"before|after|tip|deposit|should i tip|do i tip)))\b|[$€£]"
)
_DURATION = re.compile(
    r"\b(?:how long|duration|how many (?:minutes|mins|hours)|how much time|length|lasts?|"
    r"minutes long|takes? long)\b"
)
_OFFER = re.compile(
    r"\b(?:do|does|can|could)\s+(?:you|u|y'all|you guys|i|we|the \w+)\s+(?:\w+\s+)?(?:offer|do|have|"
    r"provide|get|book|sell)\b|\bis there (?:a|an|any)\b|\bdo you (?:guys )?(?:offer|do|have)\b"
)
_LIST_WORDS = word_set("""
    service services treatment treatments menu offering offerings option options list full complete
    offer offers provide provides do does have has available kind kinds sort sorts type types
    price prices pricing cost costs rate rates fee fees charge how much long duration length time
    minute minutes hour hours everything each all every thing things get book spa salon can
    what which your general usual typical standard take takes last lasts appointment appointments
    session sessions various different were they them there give send see show
    """)
_MODIFIER_OK = word_set("""
    much long is are a an the your one per single regular standard basic normal usual typical
    minute minutes min mins hour hours for of price cost do does get book how what s two three
    four another more other second extra my our
    """)
_WORD = re.compile(r"[a-z0-9$€£]+(?:'[a-z]+)?")


def _normalize(question: str) -> str:
    return re.sub(r"\s+", " ", question.lower().replace("’", "'").replace("‘", "'")).strip()


# --- formatting ----------------------------------------------------------------

_EURO = word_set("AT BE CY DE EE ES FI FR GR HR IE IT LT LU LV MT NL PT SI SK")
_CURRENCIES: dict[str, tuple[str, str]] = {
    "US": ("$", "dollars"),
    "CA": ("$", "dollars"),
    "AU": ("$", "dollars"),
    "NZ": ("$", "dollars"),
    "MX": ("$", "pesos"),
    "GB": ("£", "pounds"),
    "CH": ("CHF", "francs"),
    "IN": ("₹", "rupees"),
    "JP": ("¥", "yen"),
    "BR": ("R$", "reais"),
    "SE": ("kr", "kronor"),
    "NO": ("kr", "kroner"),
    "DK": ("kr", "kroner"),
    "PL": ("zł", "złoty"),
    "ZA": ("R", "rand"),
    "SG": ("$", "dollars"),
}
_DEFAULT_REGION = {"en": "US", "es": "ES", "fr": "FR", "de": "DE", "it": "IT", "pt": "PT"}
_DECIMAL_COMMA = word_set("es fr de it pt nl sv da nb no pl fi el hr sl sk lt lv et")


def _currency(locale: str) -> tuple[str, str, bool]:
    """(symbol, spoken plural, symbol before the amount) for a locale like ``es-ES``."""
    language, _, region = locale.partition("-")
    region = region.upper() or _DEFAULT_REGION.get(language, "US")
    symbol, word = ("€", "euros") if region in _EURO else _CURRENCIES.get(region, ("$", "dollars"))
    before = language == "en" or (symbol in {"$", "R$", "₹", "¥", "£"} and language != "fr")
    return symbol, word, before


def format_price(amount: float, locale: str, *, spoken: bool = False) -> str:
    """``95`` -> ``$95`` (en-US), ``95 €`` (es-ES), ``£95.50`` (en-GB); spoken:
    ``95 dollars``. Whole amounts have no decimals."""
    symbol, word, before = _currency(locale)
    language = locale.partition("-")[0]
    number = f"{amount:.0f}" if float(amount).is_integer() else f"{amount:.2f}"
    if spoken:
        return f"{number} {word}"
    if language in _DECIMAL_COMMA:
        number = number.replace(".", ",")
    if before:
        return (
            f"{symbol}{number}"
            if len(symbol) == 1 or symbol.endswith("$")
            else f"{symbol} {number}"
        )
    return f"{number} {symbol}"


def _clock(t: time, locale: str) -> str:
    if t >= time(23, 59):
        return "midnight"
    if not locale.startswith("en"):
        return t.strftime("%H:%M")
    if t == time(12, 0):
        return "noon"
    hour = t.hour % 12 or 12
    suffix = "AM" if t.hour < 12 else "PM"
    return f"{hour} {suffix}" if t.minute == 0 else f"{hour}:{t.minute:02d} {suffix}"


def _span(h: OpeningHours, locale: str, *, spoken: bool = False) -> str:
    dash = " to " if spoken else "–"
    return f"{_clock(h.open, locale)}{dash}{_clock(h.close, locale)}"


def _duration(minutes: int) -> str:
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes // 60} hours"
    return f"{minutes} minutes"


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


# --- hours -----------------------------------------------------------------------


def _hours(client: ClientConfig, day: str) -> OpeningHours | None:
    return client.business_hours.get(day)


def _week(client: ClientConfig, *, spoken: bool) -> str:
    """The week in groups of consecutive days with the same hours."""
    groups: list[tuple[list[str], OpeningHours | None]] = []
    for day in DAYS:
        hours = _hours(client, day)
        if groups and groups[-1][1] == hours:
            groups[-1][0].append(day)
        else:
            groups.append(([day], hours))
    if len(groups) == 1 and groups[0][1] is not None:
        return f"every day {_span(groups[0][1], client.locale, spoken=spoken)}"
    open_parts: list[str] = []
    closed: list[str] = []
    for days, hours in groups:
        if hours is None:
            closed += [_FULL_NAMES[d] for d in days]
            continue
        if spoken:
            first, last = _FULL_NAMES[days[0]], _FULL_NAMES[days[-1]]
            label = (
                first if len(days) == 1 else f"{first} {'and' if len(days) == 2 else 'to'} {last}"
            )
        else:
            first, last = days[0].title(), days[-1].title()
            label = first if len(days) == 1 else f"{first}–{last}"
        open_parts.append(f"{label} {_span(hours, client.locale, spoken=spoken)}")
    if spoken:
        text = _join(open_parts)
        return f"{text}. We're closed on {_join(closed)}" if closed else text
    return ", ".join([*open_parts, *([f"closed {_join(closed)}"] if closed else [])])


@dataclass(frozen=True, slots=True)
class _Day:
    key: str  # mon..sun
    when: date | None  # a date for today/tomorrow, None for "Thursdays"
    label: str  # "today (Saturday)", "on Thursdays"


def _days(q: str, today: date) -> list[_Day]:
    out: list[_Day] = []
    for match in _DAY_RE.finditer(q):
        word = match.group(1)
        if word in {"today", "tonight"}:
            when, label = today, "today"
        elif word in {"tomorrow", "tmrw"}:
            when, label = today + timedelta(days=1), "tomorrow"
        elif word == "day after tomorrow":
            when, label = today + timedelta(days=2), "the day after tomorrow"
        elif word.startswith("weekend"):
            out += [_Day("sat", None, "on Saturdays"), _Day("sun", None, "on Sundays")]
            continue
        elif word.startswith("weekday"):
            out += [_Day(d, None, f"on {_FULL_NAMES[d]}s") for d in DAYS[:5]]
            continue
        else:
            key = _DAY_WORDS.get(word.rstrip("s") if word.endswith("days") else word)
            if key is None:
                continue
            out.append(_Day(key, None, f"on {_FULL_NAMES[key]}s"))
            continue
        key = DAYS[when.weekday()]
        out.append(_Day(key, when, f"{label} ({_FULL_NAMES[key]})"))
    unique: list[_Day] = []
    for day in out:
        if all(day.key != u.key for u in unique):
            unique.append(day)
    return unique


def _asked_time(q: str) -> time | None:
    for match in _CLOCK.finditer(q):
        if match.group("noon"):
            return time(12) if match.group("noon") != "midnight" else time(23, 59)
        if not match.group("ampm"):
            # "open at 8" without am/pm: only after at/by/past, read as business-ish hours
            before = q[: match.start()].rstrip()
            if not re.search(r"\b(?:at|by|past|after|before|around)$", before):
                continue
            hour = int(match.group("h"))
            hour = hour + 12 if 1 <= hour <= 7 else hour
        else:
            hour = int(match.group("h")) % 12 + (12 if match.group("ampm")[0] == "p" else 0)
        return time(hour, int(match.group("m") or 0))
    return None


def _next_open(client: ClientConfig, start: date) -> tuple[date, OpeningHours] | None:
    for offset in range(7):
        day = start + timedelta(days=offset)
        hours = _hours(client, DAYS[day.weekday()])
        if hours is not None:
            return day, hours
    return None


def _when_label(day: date, today: date) -> str:
    if day == today:
        return "today"
    if day == today + timedelta(days=1):
        return "tomorrow"
    return f"on {_FULL_NAMES[DAYS[day.weekday()]]}"


def _open_now(client: ClientConfig, now: datetime) -> Fact | None:
    today = now.date()
    hours = _hours(client, DAYS[today.weekday()])
    clock = now.time()
    loc = client.locale
    if hours is not None and hours.open <= clock < hours.close:
        text = f"Yes, we're open now until {_clock(hours.close, loc)} today."
    elif hours is not None and clock < hours.open:
        text = f"We're closed right now; we open today at {_clock(hours.open, loc)}."
    else:
        nxt = _next_open(client, today + timedelta(days=1))
        if nxt is None:
            return None
        day, h = nxt
        text = (
            f"We're closed right now; we open again {_when_label(day, today)} "
            f"at {_clock(h.open, loc)}."
        )
    return Fact(text=text, kind="open_now", source="config: business_hours")


def _day_sentence(
    client: ClientConfig, day: _Day, q: str, today: date, *, spoken: bool, yes_no: bool, alone: bool
) -> str:
    """One day's hours. ``yes_no``: the question expects yes or no ("are you
    open Sunday?"; "are you closed Monday?" flips it). ``alone``: the only day
    asked about (several days get no yes/no and no "we open again")."""
    loc = client.locale
    hours = _hours(client, day.key)
    label = day.label
    asks_closed = bool(re.search(r"\bclosed\b", q))
    yes, no = ("No, ", "Yes, ") if asks_closed else ("Yes, ", "No, ")
    if not (yes_no and alone):
        yes = no = ""
    if hours is None:
        if not alone:
            return f"we're closed {label}"
        start = (day.when or today) + timedelta(days=1)
        if day.when is None:
            start = today + timedelta(days=(DAYS.index(day.key) - today.weekday()) % 7 + 1)
        nxt = _next_open(client, start)
        closed = f"we're closed {label}"
        if nxt is None:
            return closed
        nday, nh = nxt
        when = _FULL_NAMES[DAYS[nday.weekday()]]
        if day.when is not None:
            when = _when_label(nday, today)
            when = when if when in {"today", "tomorrow"} else when.removeprefix("on ")
        span = _span(nh, loc, spoken=spoken)
        return f"{no}{closed}; we open again {when}, {span}"
    span = _span(hours, loc, spoken=spoken)
    asked = _asked_time(q)
    if asked is not None:
        if hours.open <= asked < hours.close:
            return f"Yes, {label} we're open {span}"
        if asked < hours.open:
            return f"No, {label} we open at {_clock(hours.open, loc)} ({span})"
        return f"No, {label} we close at {_clock(hours.close, loc)} ({span})"
    if _FOCUS_CLOSE.search(q) and not _FOCUS_OPEN.search(q):
        return f"{label} we close at {_clock(hours.close, loc)} (open {span})"
    if _FOCUS_OPEN.search(q):
        return (
            f"{label} we open at {_clock(hours.open, loc)} and close at {_clock(hours.close, loc)}"
        )
    return f"{yes}{label} we're open {span}"


def _sentence(parts: list[str]) -> str:
    text = "; ".join(parts)
    return text[:1].upper() + text[1:] + "."


def _hours_fact(client: ClientConfig, q: str, now: datetime) -> Fact | None:
    if not client.business_hours:
        return None
    days = _days(q, now.date())
    if _NOW.search(q) and all(d.when == now.date() for d in days):
        return _open_now(client, now)
    if not days:
        text = f"Our hours are {_week(client, spoken=False)}."
        spoken = f"We're open {_week(client, spoken=True)}."
        if _FOCUS_CLOSE.search(q) or _FOCUS_OPEN.search(q):
            # "when do you close?": today first, then the week
            today = _Day(
                DAYS[now.weekday()], now.date(), f"today ({_FULL_NAMES[DAYS[now.weekday()]]})"
            )
            for_day = {
                s: _sentence(
                    [
                        _day_sentence(
                            client, today, q, now.date(), spoken=s, yes_no=False, alone=True
                        )
                    ]
                )
                for s in (False, True)
            }
            text, spoken = f"{for_day[False]} {text}", f"{for_day[True]} {spoken}"
        return Fact(text=text, kind="hours", source="config: business_hours", spoken=spoken)
    yes_no = bool(_YES_NO.search(q))
    alone = len(days) == 1
    text, spoken = (
        _sentence(
            [
                _day_sentence(client, d, q, now.date(), spoken=s, yes_no=yes_no, alone=alone)
                for d in days
            ]
        )
        for s in (False, True)
    )
    return Fact(
        text=text,
        kind="hours",
        source="config: business_hours",
        spoken=spoken if spoken != text else None,
    )


# --- services ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Match:
    service: Service
    score: float
    start: int
    end: int
    by_alias: bool
    term: str


def _match_services(words: list[str], services: tuple[Service, ...]) -> list[_Match]:
    """Services named in ``words`` (name or alias, ``fuzz.ratio`` over same-length
    word windows as ``find_service`` does), longest and best first, without
    overlaps: "deep tissue massage" is Deep Tissue Massage, not also "massage"."""
    candidates: list[tuple[float, int, _Match]] = []
    for svc in services:
        best: tuple[float, int, _Match] | None = None
        for name in (svc.name, *svc.aliases):
            name_words = _WORD.findall(name.lower())
            n = len(name_words)
            if not n:
                continue
            target = " ".join(name_words)
            threshold = 95 if len(target) <= 5 else 85
            for i in range(len(words) - n + 1):
                gram = " ".join(words[i : i + n])
                # plural and possessive forms: "facials", "massages"
                score = max(fuzz.ratio(target, gram), fuzz.ratio(target, gram.rstrip("s")))
                if score < threshold:
                    continue
                key = (score, len(target))
                if best is None or key > best[:2]:
                    best = (
                        score,
                        len(target),
                        _Match(svc, score, i, i + n, name != svc.name, target),
                    )
        if best is not None:
            candidates.append(best)
    chosen: list[_Match] = []
    for _score, _length, match in sorted(candidates, key=lambda c: (c[0], c[1]), reverse=True):
        if all(match.end <= m.start or match.start >= m.end for m in chosen):
            chosen.append(match)
    return sorted(chosen, key=lambda m: m.start)


def _unknown_modifier(words: list[str], match: _Match, client: ClientConfig) -> bool:
    """A content word right before the service's name that the config does not
    know: "hot stone massage", "couples massage", "kids manicure"."""
    known = {
        w
        for name in (match.service.name, *match.service.aliases)
        for w in _WORD.findall(name.lower())
    }
    for word in words[max(0, match.start - 2) : match.start]:
        if word in STOP_WORDS or word in _MODIFIER_OK or word in known or word.isdigit():
            continue
        if re.fullmatch(r"\d+(?:min|mins|minute|hr|h)?", word):
            continue
        return True
    return False


_HEAD_OK = word_set("""
    cut cuts haircut haircuts hair trim style session treatment service appointment price prices
    cost costs fee take takes last lasts today tonight tomorrow weekend week please pls thanks
    monday mondays tuesday tuesdays wednesday wednesdays thursday thursdays friday fridays
    saturday saturdays sunday sundays morning afternoon evening now
    """)


def _unknown_head(words: list[str], match: _Match, client: ClientConfig) -> bool:
    """A content word right after an alias that makes it a different noun phrase
    the config does not know: "beard oil" is no Beard Trim, "fade cream" no Skin Fade."""
    if not match.by_alias or match.end >= len(words):
        return False
    word = words[match.end]
    known = {
        w
        for svc in client.services
        for name in (svc.name, *svc.aliases)
        for w in _WORD.findall(name.lower())
    }
    return not (
        word in STOP_WORDS
        or word in _MODIFIER_OK
        or word in _LIST_WORDS
        or word.rstrip("s") in _LIST_WORDS
        or word in _HEAD_OK
        or word in known
        or word.isdigit()
        or re.fullmatch(r"[$€£]?\d+(?:min|mins|minute|hr|h|[.,]\d+)?", word) is not None
    )


def _also(matches: list[_Match], client: ClientConfig) -> list[Service]:
    """Other services a one-word alias could mean: "massage" is the Swedish
    Massage's alias, but the Deep Tissue Massage is a massage too."""
    named = {m.service.name for m in matches}
    out: list[Service] = []
    for m in matches:
        if not m.by_alias or " " in m.term:
            continue
        for svc in client.services:
            if svc.name in named or svc in out:
                continue
            words = {w.rstrip("s") for w in _WORD.findall(svc.name.lower())}
            if m.term.rstrip("s") in words:
                out.append(svc)
    return out


def _leftover(q: str, client: ClientConfig) -> set[str]:
    """Content words beyond the vocabulary of a list question ("what are your
    prices?"): "treatments for acne" leaves ``acne``."""
    name_words = set(_WORD.findall(client.name.lower()))
    return {
        w
        for w in _WORD.findall(q)
        if w not in STOP_WORDS
        and w not in _LIST_WORDS
        and w not in name_words
        and w.rstrip("s") not in _LIST_WORDS
        and not w.isdigit()
        and w not in {"$", "€", "£"}
    }


def _describe(svc: Service, client: ClientConfig, *, spoken: bool) -> str:
    parts = [_duration(svc.duration_minutes)]
    if svc.price is not None:
        parts.append(format_price(svc.price, client.locale, spoken=spoken))
    return f"{svc.name} ({', '.join(parts)})"


def _service_fact(client: ClientConfig, q: str) -> Fact | None:
    if not client.services:
        return None
    words = _WORD.findall(q)
    matches = _match_services(words, client.services)
    wants_price = bool(_PRICE.search(q))
    wants_duration = bool(_DURATION.search(q))
    if matches:
        if any(
            _unknown_modifier(words, m, client) or _unknown_head(words, m, client) for m in matches
        ):
            return None
        confidence = min(m.score for m in matches) / 100
        services = [m.service for m in matches]
        also = _also(matches, client)
        if wants_price and all(s.price is None for s in services):
            return None
        if wants_price or wants_duration:
            kind: FactKind = "price" if wants_price else "duration"
            text, spoken = (
                _priced(
                    services, also, client, spoken=s, price=wants_price, duration=wants_duration
                )
                for s in (False, True)
            )
            return Fact(text, kind, "config: services", confidence, spoken)
        if _OFFER.search(q):
            listed = [_describe(s, client, spoken=False) for s in (*services, *also)]
            said = [_describe(s, client, spoken=True) for s in (*services, *also)]
            return Fact(
                f"Yes, we offer {_join(listed)}.",
                "services",
                "config: services",
                confidence,
                f"Yes, we offer {_join(said)}.",
            )
        return None
    if _leftover(q, client):
        return None
    if wants_price or wants_duration:
        kind = "price" if wants_price else "duration"
        text, spoken = (
            _priced(list(client.services), [], client, spoken=s, price=wants_price, duration=True)
            for s in (False, True)
        )
        return Fact(text, kind, "config: services", 1.0, spoken) if text else None
    if re.search(r"\b(?:services?|treatments?|menu|offerings?|options)\b", q) or re.search(
        r"\bwhat (?:\w+ )?(?:do|can) (?:you|u|i) (?:offer|do|provide|get|book)\b", q
    ):
        listed = [_describe(s, client, spoken=False) for s in client.services]
        said = [_describe(s, client, spoken=True) for s in client.services]
        return Fact(
            f"We offer {_join(listed)}.",
            "services",
            "config: services",
            1.0,
            f"We offer {_join(said)}.",
        )
    return None


def _priced(
    services: list[Service],
    also: list[Service],
    client: ClientConfig,
    *,
    spoken: bool,
    price: bool,
    duration: bool,
) -> str:
    def one(svc: Service, lead: bool) -> str:
        name = f"The {svc.name}" if lead else svc.name
        money = (
            format_price(svc.price, client.locale, spoken=spoken) if svc.price is not None else None
        )
        length = _duration(svc.duration_minutes)
        if price and money is None:
            return f"{name} takes {length} (no price listed)"
        if price and not duration:
            return f"{name} is {money} ({length})"
        if duration and not price:
            return f"{name} takes {length}" + (f" ({money})" if money else "")
        return f"{name} takes {length}" + (f" and is {money}" if money else "")

    if len(services) == 1:
        text = one(services[0], lead=True) + "."
    elif price:
        listed = [
            f"{s.name} {format_price(s.price, client.locale, spoken=spoken)} "
            f"({_duration(s.duration_minutes)})"
            for s in services
            if s.price is not None
        ]
        text = f"Our prices: {_join(listed)}." if listed else ""
    else:
        text = f"{_join([one(s, lead=False) for s in services])}."
        text = text[:1].upper() + text[1:]
    if also:
        text += f" We also offer {_join([_describe(s, client, spoken=spoken) for s in also])}."
    return text


# --- entry point -------------------------------------------------------------------


def answer_fact(question: str, client: ClientConfig, now: datetime) -> Fact | None:
    """Answer ``question`` from ``client``'s config, or None to leave it to retrieval.

    ``now`` is converted to the client's timezone (a naive ``now`` is taken as
    already local). Never raises on odd input; returns None when unsure.
    """
    q = _normalize(question)
    if not q or _NOT_CONFIG.search(q):
        return None
    local = now.replace(tzinfo=client.tz) if now.tzinfo is None else now.astimezone(client.tz)
    if _HOURS.search(q) and not _OTHER_THING_OPEN.search(q):
        return _hours_fact(client, q, local)
    return _service_fact(client, q)
