"""Contact details as callers say them, turned into what people type, and back.

On a call the flow reads a recogniser's transcript (Whisper), so the hard
slots arrive spoken: "six one seven five five five oh one four seven",
"double five", "m a r i a dot l o p e z at example dot com", "L as in Larry",
"Maria Lopes, L-O-P-E-Z". :func:`typed` rewrites such a turn into the form
the validators already read (``6175550147``, ``maria.lopez@example.com``,
``Maria Lopez``); it is used for phone-channel turns only, and text that is
already typed passes through unchanged (``typed(typed(x)) == typed(x)``).

Number words go to ``text2num`` (``alpha2digit``); the phone-number grammar
around it ("oh", "double", "triple", digit groups) is ours. The read-back
helpers (:func:`say_email`, :func:`spell`; phone numbers:
:func:`engine.phones.say_phone`) give the forms a receptionist reads back.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz
from text_to_num import alpha2digit

__all__ = [
    "digits",
    "email_words",
    "letters",
    "merge_name",
    "respell_name",
    "say_email",
    "spell",
    "spoken_address",
    "typed",
]

# --- letters ------------------------------------------------------------------

# "L as in Larry", "l as in lima" -> "l"
_AS_IN = re.compile(r"\b([A-Za-z])\s+(?:as\s+in|like\s+in)\s+[A-Za-z]+\b", re.IGNORECASE)
# Single letters separated by spaces, hyphens, dots or commas: "m a r i a",
# "M-A-R-I-A", "L. O. P. E. Z."; not inside a word or an address.
_RUN = re.compile(
    r"(?<![\w@'’.-])[A-Za-z](?:(?:\s*[-.,]\s*|\s+)[A-Za-z](?![\w@'’]))+\.?(?![\w@'’])"
)
# "Lopez with a z", "Lopez, spelled with an s at the end"
_WITH_LETTER = re.compile(
    r"\s*,?\s*(?:spelled\s+|spelt\s+)?with\s+an?\s+[A-Za-z]\b(?:\s+at\s+the\s+(?:end|start))?",
    re.IGNORECASE,
)


def _spelled(run: str) -> str | None:
    """The word a run of single letters spells (lower case), or None when the
    run is too short to be spelling (two letters need hyphens or dots)."""
    chars = re.findall(r"[A-Za-z]", run)
    if len(chars) >= 3 or (len(chars) == 2 and re.search(r"[-.]", run)):
        return "".join(chars).lower()
    return None


def letters(text: str) -> str:
    """Spelled letters joined: ``"m a r i a"`` -> ``"maria"``, ``"M-A-R-I-A"``
    -> ``"maria"``, ``"L as in Larry, O as in Oscar"`` -> ``"lo"``; a word
    followed by "with a z" loses the hint (``"Lopez with a z"`` -> ``"Lopez"``)."""
    out = _AS_IN.sub(lambda m: m.group(1).lower(), text)
    out = _WITH_LETTER.sub("", out)

    def join(m: re.Match[str]) -> str:
        word = _spelled(m.group(0))
        return m.group(0) if word is None else word

    return _RUN.sub(join, out)


# --- digits -------------------------------------------------------------------

_DIGIT_WORDS = r"zero|oh|o|one|two|three|four|five|six|seven|eight|nine"
_HUNDRED = re.compile(
    rf"\b(one|two|three|four|five|six|seven|eight|nine)\s+(hundred|thousand)\b"
    rf"(?=[\s,.-]+(?:{_DIGIT_WORDS}|double|triple|\d)\b)",
    re.IGNORECASE,
)
_REPEAT = {"double": 2, "triple": 3}
_TOKEN = re.compile(r"\S+")
_DIGIT_RUN = re.compile(r"(?:\+|\bplus\s+)?\(?\d+\)?(?:[\s,.-]+\(?\d+\)?)*", re.IGNORECASE)
_DATE_LIKE = re.compile(r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}(?:/\d{2,4})?")
_CLOCK_AMPM = re.compile(r"\b(\d{1,2}) ([0-5]\d)(?=\s*(?:a\.?\s?m\b|p\.?\s?m\b|o'?clock\b))")
_CLOCK_AT = re.compile(r"\b(at|around|by|for) (\d{1,2}) ([0-5]\d)\b(?!\s*\d)", re.IGNORECASE)


def _bare(token: str) -> str:
    return token.strip(",.;:!?").lower()


def _is_digits(token: str) -> bool:
    return _bare(token).isdigit()


def digits(text: str) -> str:
    """Number words to digits, and a spoken phone number to one digit string.

    ``"six one seven five five five oh one four seven"`` -> ``"6175550147"``,
    ``"double five"`` -> ``"55"``, ``"triple oh"`` -> ``"000"``, ``"eight
    hundred five five five ..."`` -> ``"800555..."``, ``"617-555-0147"`` ->
    ``"6175550147"``, ``"plus four four ..."`` -> ``"+44..."``. Digit groups
    join only when they make seven digits or more (a phone number); a clock
    time said in words becomes one (``"at two thirty"`` -> ``"at 2:30"``).
    """
    out = _HUNDRED.sub(
        lambda m: m.group(1) + (" zero zero" if m.group(2).lower() == "hundred" else " zero" * 3),
        text,
    )
    out = str(alpha2digit(out, "en"))
    tokens = [m for m in _TOKEN.finditer(out)]
    words = [_bare(m.group(0)) for m in tokens]
    pieces: list[str] = []
    last = 0
    for i, m in enumerate(tokens):
        word = words[i]
        prev = words[i - 1] if i > 0 else ""
        nxt = words[i + 1] if i + 1 < len(words) else ""
        nxt2 = words[i + 2] if i + 2 < len(words) else ""
        new: str | None = None
        if word in ("oh", "o"):
            after_digit = prev.isdigit() or prev in _REPEAT
            before_digits = nxt.isdigit() and (nxt2.isdigit() or nxt2 in ("oh", "o", *_REPEAT))
            if after_digit or before_digits:
                new = "0"
        elif word in _REPEAT:
            target = "0" if nxt in ("oh", "o") else nxt
            if len(target) == 1 and target.isdigit():
                new = "§" + target * _REPEAT[word]  # joined with the digit that follows
        if new is not None:
            pieces.append(out[last : m.start()])
            pieces.append(new + m.group(0)[len(m.group(0).rstrip(",.;:!?")) :])
            last = m.end()
    pieces.append(out[last:])
    out = "".join(pieces)
    # "double 5" -> "§55 5": drop the digit the repeat already wrote
    out = re.sub(r"§(\d+)[,.]?\s+(?:\d|oh|o)\b", r"\1", out, flags=re.IGNORECASE)
    out = out.replace("§", "")

    def join(m: re.Match[str]) -> str:
        run = m.group(0)
        if _DATE_LIKE.search(run):
            return run
        number = re.sub(r"\D", "", run)
        if len(number) < 7:
            return run
        plus = "+" if run.startswith("+") or run.lower().startswith("plus") else ""
        return plus + number + (run[len(run.rstrip(",.-")) :] if run[-1:] in ",." else "")

    out = _DIGIT_RUN.sub(join, out)
    out = _CLOCK_AMPM.sub(r"\1:\2", out)
    return _CLOCK_AT.sub(r"\1 \2:\3", out)


# --- email --------------------------------------------------------------------

_SYMBOLS = {
    "dot": ".",
    "period": ".",
    "point": ".",
    "underscore": "_",
    "dash": "-",
    "hyphen": "-",
    "minus": "-",
    "plus": "+",
}
_SYM = r"(?:dot|period|point|underscore|under\s+score|dash|hyphen|minus|plus)"
_LOCAL = re.compile(rf"(?<![\w.+-])[\w'+.-]+(?:\s+{_SYM}\s+[\w'+.-]+|\s+{_SYM}(?=\s*$))*\s*$")
_AT = re.compile(r"\s+at(?:\s+sign)?\s+|\s*@\s*", re.IGNORECASE)
_DOMAIN = re.compile(
    r"[a-z0-9-]+(?:(?:\s*\.\s*|\s+(?:dot|period|point)\s+)[a-z0-9-]+)*"
    r"(?:\s*\.\s*|\s+(?:dot|period|point)\s+)[a-z]{2,}\b",
    re.IGNORECASE,
)
_NOT_LOCAL = frozenset(
    {"is", "it's", "its", "email", "mail", "e-mail", "me", "address", "my", "the", "at"}
)


def _symbolic(words: str) -> str:
    out = re.sub(r"\bunder\s+score\b", "underscore", words, flags=re.IGNORECASE)
    out = re.sub(
        rf"\s*\b({_SYM})\b\s*",
        lambda m: _SYMBOLS[m.group(1).lower()],
        out,
        flags=re.IGNORECASE,
    )
    return re.sub(r"\s+", "", out)


def email_words(text: str, expecting: bool) -> str:
    """A spoken address as typed: ``"maria dot lopez at example dot com"`` ->
    ``"maria.lopez@example.com"``, ``"Maria.Lopez at example.com"`` ->
    ``"maria.lopez@example.com"``, ``"maria eighty seven at gmail dot com"``
    (after :func:`digits`) -> ``"maria87@gmail.com"``.

    Rewritten when an address is expected or the "… at … dot com" shape is
    clear; the last "at" with a domain after it is the address's (``"email me
    at ana at gmail dot com"``). A spoken address is lower-cased (case cannot
    be heard). Text that already has an ``@`` is left alone.
    """
    if "@" in text:
        return text
    for at in reversed(list(_AT.finditer(text))):
        domain = _DOMAIN.match(text, at.end())
        if domain is None:
            continue
        before = text[: at.start()]
        local = _LOCAL.search(before)
        if local is None:
            continue
        local_text = local.group(0).strip()
        start = local.start()
        if local_text.lower() in _NOT_LOCAL:
            continue
        if local_text.isdigit():  # "maria 87 at …": the name said before the digits
            word = re.search(r"(?<![\w'])([^\W\d_]+)\s+$", before[:start])
            if word is not None and word.group(1).lower() not in _NOT_LOCAL:
                local_text, start = word.group(1) + local_text, word.start(1)
        if not expecting and not re.search(r"\b(?:dot|period)\b|\.", domain.group(0)):
            continue
        address = (_symbolic(local_text) + "@" + _symbolic(domain.group(0))).lower()
        return text[:start] + address + text[domain.end() :]
    return text


# --- names --------------------------------------------------------------------

_CONNECTOR = re.compile(
    r"[\s,;:—–-]*(?:(?:that'?s|that\s+is|it'?s|spelled|spelt|that'?s\s+spelled)[\s,:]*)?$",
    re.IGNORECASE,
)
_NAME_WORD = re.compile(r"[^\W\d_][\w'’-]*$")


def respell_name(text: str) -> str:
    """A spelled surname after a name corrects it and is dropped: ``"My name is
    Maria Lopes, L-O-P-E-Z"`` -> ``"My name is Maria Lopez"``; ``"Maria Lopez,
    that's L O P E Z"`` -> ``"Maria Lopez"``. A spelling that is part of an
    address ("… at …") or has no name word before it is left to :func:`letters`."""
    for run in reversed(list(_RUN.finditer(text))):
        word = _spelled(run.group(0))
        if word is None:
            continue
        after = text[run.end() :]
        if re.match(r"\s*(?:@|at\b|dot\b|underscore\b|dash\b)", after, re.IGNORECASE):
            continue
        before = text[: run.start()]
        lead = _CONNECTOR.search(before)
        head = before[: lead.start()] if lead else before
        candidates = list(re.finditer(r"[^\W\d_][\w'’-]*", head))[-3:]
        best: tuple[float, re.Match[str]] | None = None
        for cand in candidates:
            score = fuzz.ratio(cand.group(0).lower(), word)
            if best is None or score > best[0]:
                best = (score, cand)
        if best is None or best[0] < 60 or head[best[1].end() :].strip():
            continue  # only the name word right before the spelling is corrected
        cand = best[1]
        fixed = word if cand.group(0).islower() else word.capitalize()  # as typed
        text = head[: cand.start()] + fixed + head[cand.end() :] + after
    return text


def merge_name(current: str | None, said: str) -> str:
    """A one-word correction of a longer name replaces the word it corrects:
    ``merge_name("Maria Lopes", "Lopez")`` -> ``"Maria Lopez"``. Anything else
    is the new name as said."""
    if not current or len(said.split()) != 1:
        return said
    words = current.split()
    if len(words) < 2:
        return said
    scores = [fuzz.ratio(w.lower(), said.lower()) for w in words]
    best = max(range(len(words)), key=lambda i: scores[i])
    if scores[best] < 60:
        return said
    words[best] = said
    return " ".join(words)


# --- the whole turn ---------------------------------------------------------------


_INTRO = re.compile(
    r"^\s*(?:(?:no|yes|yeah|sure|okay|ok|so)[\s,.!]+)*"
    r"(?:(?:my\s+)?e-?mail(?:\s+address)?\s+is|it'?s|it\s+is|that'?s|that\s+is|"
    r"you\s+can\s+use|use)[\s,:]+",
    re.IGNORECASE,
)
_ADDRESS_AT = re.compile(r"\s+at\s+(?=[\w-]+(?:\s*\.\s*|\s+dot\s+)[a-z]{2,}\b)", re.IGNORECASE)


def spoken_address(text: str) -> str:
    """An answer to "what's your email?" as Whisper writes it, made readable.

    Whisper spells and punctuates a spoken address in its own ways:
    ``"M-A-R-I-A.L-O-P-E-Z at example.com."`` (the dot between spelled
    groups), ``"j-o-n-dot-w-h-i-t..."``, ``"Maria. Lopez at example.com."`` (a
    said "dot" heard as a full stop), ``"My email is Maria Lopez at
    example.com."`` (the local part in words). Here those become ``"m-a-r-i-a
    dot l-o-p-e-z at example.com"``, ``"maria dot lopez at example.com"`` and
    ``"marialopez at example.com"``, which :func:`letters` and
    :func:`email_words` then read. Only for a turn that answers the email
    question; text with an ``@`` is left alone.
    """
    if "@" in text:
        return text
    out = re.sub(r"(?i)-dot-", " dot ", text)
    out = re.sub(r"(?<=-[A-Za-z])\.(?=[A-Za-z]-)", " dot ", out)
    at = _ADDRESS_AT.search(out)
    if at is None:
        return out
    local = _INTRO.sub("", out[: at.start()]).strip()
    local = re.sub(r"(?<=\w)\.\s+(?=\w)", " dot ", local)  # "Maria. Lopez"
    words = local.split()
    plain = all(re.fullmatch(r"[^\W\d_]{2,}", w) and w.lower() not in _SYMBOLS for w in words)
    numbers = alpha2digit(local, "en") != local  # "maria eighty seven": digits() reads it
    if 2 <= len(words) <= 3 and plain and not numbers:
        local = "".join(words)  # "maria lopez at ...": said without a dot
    return f"{local} at {out[at.end() :]}"


def typed(text: str, expecting: str | None = None) -> str:
    """A spoken turn as the validators read typed text (see the module doc).

    ``expecting``: the slot the flow asked for; ``"email"`` turns "at"/"dot"
    words into an address even without a clear "dot com", and reads
    Whisper's ways of writing one (:func:`spoken_address`).
    """
    out = spoken_address(text) if expecting == "email" else respell_name(text)
    out = letters(out)
    out = digits(out)
    return email_words(out, expecting == "email")


# --- read-backs -----------------------------------------------------------------------

_SAID_AS_WORDS = frozenset(
    {
        "gmail",
        "googlemail",
        "yahoo",
        "hotmail",
        "outlook",
        "icloud",
        "aol",
        "example",
        "protonmail",
        "proton",
        "live",
        "msn",
        "comcast",
        "com",
        "net",
        "org",
        "edu",
        "gov",
        "info",
    }
)
_SAY_SYMBOL = {".": "dot", "_": "underscore", "-": "dash", "+": "plus", "'": "apostrophe"}


def spell(word: str) -> str:
    """Letters spaced, upper case: ``"Lopez"`` -> ``"L O P E Z"``."""
    return " ".join(ch.upper() for ch in word if not ch.isspace())


def _say_part(part: str, words_ok: bool) -> str:
    said: list[str] = []
    for chunk in re.split(r"([._+'-])", part):
        if not chunk:
            continue
        if chunk in _SAY_SYMBOL:
            said.append(_SAY_SYMBOL[chunk])
        elif words_ok and chunk.lower() in _SAID_AS_WORDS:
            said.append(chunk.lower())
        else:
            said.append(" ".join(chunk.lower()))
    return " ".join(said)


def say_email(email: str) -> str:
    """An address as read back on a call: ``"maria.lopez@example.com"`` ->
    ``"m a r i a dot l o p e z at example dot com"``; well-known domains are
    said as words, anything else is spelled (``"x.io"`` -> ``"x dot i o"``)."""
    local, _, domain = email.rpartition("@")
    if not local:
        return _say_part(email, False)
    return f"{_say_part(local, False)} at {_say_part(domain, True)}"
