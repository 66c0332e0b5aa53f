"""Parsers: a knowledge file's bytes -> :class:`~engine.knowledge.types.Section` runs.

- Markdown / text (``.md``, ``.markdown``, ``.txt``): ATX (``## Title``) and
  setext (``Title`` over ``===``/``---``) headings open sections; fenced code is
  kept as text; links keep their words and drop their URLs; emphasis markers go.
- HTML (``.html``, ``.htm``; a saved web page): ``nav``, ``header``, ``footer``,
  ``aside``, ``script``, ``style``, forms and ARIA ``navigation``/``banner``/
  ``contentinfo`` regions are dropped; ``<main>`` (else ``<article>``, else
  ``<body>``) is read; ``h1``-``h6`` open sections, block elements break
  paragraphs (beautifulsoup4, stdlib ``html.parser``).
- PDF (``.pdf``, pypdf): one run per page and heading, pages 1-based. PDFs carry
  no heading markup: lines set in a font clearly larger than the body text's
  (the most common size) are headings, larger sizes outermost; lines clearly
  smaller (running footers, page numbers) are dropped. A page whose
  fonts cannot be read falls back to its plain text under the current heading.

:func:`parse_file` picks by suffix; :data:`SUFFIXES` lists what is read. A file
that cannot be decoded raises :class:`KnowledgeFileError` naming it.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from engine.knowledge.types import Section

__all__ = [
    "SUFFIXES",
    "KnowledgeFileError",
    "parse_file",
    "parse_html",
    "parse_markdown",
    "parse_pdf",
    "parse_text",
]

SUFFIXES = frozenset({".md", ".markdown", ".txt", ".html", ".htm", ".pdf"})
"""File suffixes (lowercase) a knowledge folder is read for; others are ignored."""


class KnowledgeFileError(ValueError):
    """A knowledge file could not be read: ``file`` (as given) and ``reason``."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file, self.reason = file, reason


def parse_file(path: Path, name: str | None = None) -> list[Section]:
    """Sections of the file at ``path`` (``name``: how errors name it).

    Raises KnowledgeFileError for an unknown suffix or a file that cannot be parsed.
    """
    shown = name or str(path)
    suffix = path.suffix.lower()
    try:
        data = path.read_bytes()
        if suffix in (".md", ".markdown"):
            return parse_markdown(_decode(data))
        if suffix == ".txt":
            return parse_text(_decode(data))
        if suffix in (".html", ".htm"):
            return parse_html(_decode(data))
        if suffix == ".pdf":
            return parse_pdf(data)
    except KnowledgeFileError:
        raise
    except Exception as exc:  # a parser library's own error, mapped here
        raise KnowledgeFileError(shown, f"cannot parse ({type(exc).__name__})") from exc
    raise KnowledgeFileError(shown, f"unsupported file type {suffix or '(none)'}")


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


_WS = re.compile(r"\s+")


def _clean(text: str) -> str:
    return _WS.sub(" ", text).strip()


# -- Markdown and text ------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)[ \t]*#*[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"(\*\*|__|(?<!\w)[*_](?=\S)|(?<=\S)[*_](?!\w)|`)")
_LIST = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_HR = re.compile(r"^ {0,3}([-*_])( *\1){2,} *$")


def _inline(text: str) -> str:
    return _clean(_EMPHASIS.sub("", _LINK.sub(r"\1", text)))


class _Builder:
    """Collects paragraphs under the current heading path and page."""

    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.stack: list[tuple[int, str]] = []
        self.page: int | None = None
        self.paragraphs: list[str] = []
        self.lines: list[str] = []

    def heading(self, level: int, title: str) -> None:
        self.flush()
        title = _inline(title)
        while self.stack and self.stack[-1][0] >= level:
            self.stack.pop()
        if title:
            self.stack.append((level, title))

    def line(self, text: str) -> None:
        self.lines.append(text)

    def end_paragraph(self) -> None:
        text = _clean(" ".join(self.lines))
        self.lines = []
        if text:
            self.paragraphs.append(text)

    def flush(self) -> None:
        self.end_paragraph()
        if self.paragraphs:
            path = tuple(title for _, title in self.stack)
            self.sections.append(Section(path, self.page, tuple(self.paragraphs)))
        self.paragraphs = []

    def new_page(self, page: int) -> None:
        self.flush()
        self.page = page


def parse_markdown(text: str) -> list[Section]:
    """Sections of a Markdown document (headings kept as the section path)."""
    out = _Builder()
    _markdown_into(out, text.splitlines())
    out.flush()
    return out.sections


def _markdown_into(out: _Builder, lines: Sequence[str]) -> None:
    fenced = False
    for i, raw in enumerate(lines):
        if _FENCE.match(raw):
            fenced = not fenced
            out.end_paragraph()
            continue
        if fenced:
            out.line(raw)
            continue
        heading = _ATX.match(raw)
        if heading:
            out.heading(len(heading.group(1)), heading.group(2))
            continue
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if raw.strip() and _SETEXT.match(nxt) and not out.lines and not _LIST.match(raw):
            out.heading(1 if nxt.strip().startswith("=") else 2, raw)
            continue
        if _SETEXT.match(raw) or _HR.match(raw) or not raw.strip():
            out.end_paragraph()
            continue
        if _LIST.match(raw):
            # each list item is its own paragraph: chunks may then split between items
            out.end_paragraph()
            out.line(_inline(_LIST.sub("", raw)))
            continue
        out.line(_inline(raw))


def parse_text(text: str) -> list[Section]:
    """Sections of a plain-text file: paragraphs (blank-line separated), no headings."""
    out = _Builder()
    for raw in text.splitlines():
        if raw.strip():
            out.line(raw)
        else:
            out.end_paragraph()
    out.flush()
    return out.sections


# -- HTML -----------------------------------------------------------------------------------

_DROP_TAGS = (
    "nav",
    "header",
    "footer",
    "aside",
    "script",
    "style",
    "noscript",
    "template",
    "form",
    "button",
    "select",
    "input",
    "textarea",
    "iframe",
    "svg",
    "canvas",
    "dialog",
)
_DROP_ROLES = ("navigation", "banner", "contentinfo", "search", "complementary", "dialog")
_BLOCKS = (
    "p",
    "div",
    "section",
    "article",
    "main",
    "li",
    "ul",
    "ol",
    "dl",
    "dt",
    "dd",
    "tr",
    "table",
    "blockquote",
    "pre",
    "figure",
    "figcaption",
    "address",
)
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")


def parse_html(text: str) -> list[Section]:
    """Sections of a saved web page's content, its site chrome dropped."""
    from bs4 import BeautifulSoup
    from bs4.element import Comment, NavigableString, Tag

    soup = BeautifulSoup(text, "html.parser")
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for tag in soup.find_all(_DROP_TAGS):
        tag.decompose()
    for tag in soup.find_all(True):
        if tag.decomposed:
            continue
        if str(tag.get("role", "")) in _DROP_ROLES or tag.has_attr("hidden"):
            tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.body or soup
    if not isinstance(root, Tag):
        return []

    # Flatten to Markdown-shaped lines: headings as ATX lines, blocks as paragraphs.
    marker = "\x00"
    for tag in root.find_all(_HEADINGS):
        level = int(tag.name[1])
        title = _clean(tag.get_text(" "))
        tag.replace_with(NavigableString(f"\n\n{marker}{level} {title}\n\n"))
    for tag in root.find_all("br"):
        tag.replace_with(NavigableString("\n"))
    for tag in root.find_all(_BLOCKS):
        tag.insert_before(NavigableString("\n\n"))
        tag.insert_after(NavigableString("\n\n"))
        if tag.name == "li":
            tag.insert(0, NavigableString("- "))
    for tag in root.find_all(["td", "th"]):
        tag.insert_after(NavigableString(" | "))
    pieces: list[str] = []
    for piece in root.find_all(string=True):
        s = str(piece)
        # source-formatting whitespace collapses; the breaks inserted above survive
        pieces.append(s if s.strip("\n ") == "" and "\n" in s else _WS.sub(" ", s))
    flat = "".join(pieces)

    out = _Builder()
    for raw in flat.split("\n"):
        line = raw.strip()
        if line.startswith(marker):
            digit, _, title = line[1:].partition(" ")
            out.heading(int(digit), title)
        elif not line:
            out.end_paragraph()
        elif line.startswith("- "):
            out.end_paragraph()
            out.line(line[2:])
        else:
            out.line(line)
    out.flush()
    return out.sections


# -- PDF --------------------------------------------------------------------------------------

_HEADING_RATIO = 1.15
"""A line whose font is this much larger than the body text's is a heading."""
_HEADING_MAX_WORDS = 16
_FOOTNOTE_RATIO = 0.8
"""A line whose font is this much smaller than the body text's (page headers,
footers, page numbers) is dropped."""


def parse_pdf(data: bytes) -> list[Section]:
    """Sections of a PDF, one or more per page (``page`` 1-based)."""
    from pypdf import PdfReader

    reader = PdfReader(io.BytesIO(data))
    pages: list[list[tuple[str, float]]] = []
    for page in reader.pages:
        try:
            pages.append(_pdf_lines(page))
        except Exception:  # an odd font or content stream: keep the words, lose headings
            pages.append([(line, 0.0) for line in (page.extract_text() or "").splitlines()])

    sizes: Counter[float] = Counter()
    for lines in pages:
        for text, size in lines:
            if size > 0:
                sizes[size] += len(text)
    body = sizes.most_common(1)[0][0] if sizes else 0.0
    heading_sizes = sorted(
        {size for size in sizes if body > 0 and size > body * _HEADING_RATIO}, reverse=True
    )
    level_of = {size: i + 1 for i, size in enumerate(heading_sizes)}

    out = _Builder()
    for number, lines in enumerate(pages, start=1):
        out.new_page(number)
        for text, size in lines:
            words = text.split()
            if 0 < size < body * _FOOTNOTE_RATIO:
                continue  # running headers/footers and page numbers
            if size in level_of and 0 < len(words) <= _HEADING_MAX_WORDS:
                out.heading(level_of[size], text)
            elif not words:
                out.end_paragraph()
            else:
                out.line(text)
                if text.rstrip().endswith((".", "!", "?", ":")) and len(words) < 8:
                    out.end_paragraph()
    out.flush()
    return out.sections


def _pdf_lines(page: Any) -> list[tuple[str, float]]:
    """The page's text lines with the largest effective font size on each (points).

    A blank line between paragraphs is kept as ``("", 0.0)``.
    """
    runs: list[tuple[str, float, float]] = []  # text, size, baseline y

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], _font: Any, size: Any) -> None:
        scale = abs(float(tm[3]) * float(cm[3])) or 1.0
        y = float(tm[5]) * float(cm[3]) + float(cm[5])
        runs.append((text, float(size or 0) * scale, y))

    page.extract_text(visitor_text=visit)
    lines: list[tuple[str, float]] = []
    current: list[str] = []
    current_size = 0.0
    last_y: float | None = None
    last_gap: float | None = None

    def end_line(y: float | None) -> None:
        nonlocal current, current_size, last_y, last_gap
        text = _clean("".join(current))
        if text:
            if last_y is not None and y is not None:
                gap = abs(last_y - y)
                # a gap clearly wider than the line spacing so far is a paragraph break
                if last_gap is not None and gap > last_gap * 1.3 and gap > 0:
                    lines.append(("", 0.0))
                last_gap = gap if last_gap is None else min(last_gap, gap) or gap
            lines.append((text, round(current_size, 1)))
            last_y = y
        current, current_size = [], 0.0

    run_y: float | None = None
    for text, size, y in runs:
        parts = text.split("\n")
        for i, part in enumerate(parts):
            if i > 0:
                end_line(run_y)
            if part.strip():
                current.append(part)
                current_size = max(current_size, size)
                run_y = y
    end_line(run_y)
    return lines


def iter_files(folder: Path) -> Iterable[tuple[str, Path]]:
    """``(relative posix name, path)`` of every readable knowledge file under
    ``folder``, sorted; hidden files and folders are skipped."""
    if not folder.is_dir():
        return []
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in SUFFIXES:
            found.append((rel.as_posix(), path))
    return sorted(found)
