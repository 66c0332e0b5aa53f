"""Parsers and chunking: headings kept as section paths, HTML chrome dropped,
PDF pages numbered from 1, chunks sized and never across sections."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from providers.knowledge import ChunkOptions, KnowledgeFileError, chunk_sections, parse_file
from providers.knowledge.chunking import chunk_id
from providers.knowledge.parsers import parse_html, parse_markdown
from tests.knowledge.conftest import CLIENTS
from tests.knowledge.make_dental_pdf import long_pages, write_pdf

DENTAL = CLIENTS / "bright-smile-dental" / "knowledge"


def test_markdown_sections_keep_heading_paths() -> None:
    sections = parse_markdown(
        "# Clinic\n\nIntro text.\n\n## Parking\nFree parking **behind** the [building](http://x.example).\n\n"
        "### Bikes\nRacks at the door.\n\n## Hours\nSetext follows.\n\nTitle\n-----\nUnder setext.\n"
        "```\n# not a heading\n```\n"
    )
    paths = [s.path for s in sections]
    assert paths == [
        ("Clinic",),
        ("Clinic", "Parking"),
        ("Clinic", "Parking", "Bikes"),
        ("Clinic", "Hours"),
        ("Clinic", "Title"),
    ]
    assert sections[1].paragraphs == ("Free parking behind the building.",)
    assert "# not a heading" in " ".join(sections[-1].paragraphs)


def test_chunks_never_span_sections_and_carry_section_and_page() -> None:
    chunks = chunk_sections("c", "faq.md", parse_file(DENTAL / "faq.md"))
    sections = {c.section for c in chunks}
    assert "Bright Smile Dental — frequently asked questions > Do you see children?" in sections
    for chunk in chunks:
        assert chunk.page is None
        assert chunk.file == "faq.md"
        assert chunk.section.count(" > ") == 1  # one FAQ entry each
    parking = next(c for c in chunks if c.section.endswith("where do I park?"))
    assert "validate it for up to two hours" in parking.text
    assert "fluoride" not in parking.text


def test_long_sections_split_with_overlap_between_80_and_200_words() -> None:
    sentences = [
        f"Sentence number {i} talks about topic {i} in some detail here." for i in range(80)
    ]
    text = "# Handbook\n\n## Long section\n\n" + "\n\n".join(
        " ".join(sentences[i : i + 4]) for i in range(0, 80, 4)
    )
    chunks = chunk_sections("c", "h.md", parse_markdown(text), ChunkOptions())
    assert len(chunks) >= 3
    assert all(c.section == "Handbook > Long section" for c in chunks)
    assert all(c.words <= 200 for c in chunks)
    assert all(c.words >= 80 for c in chunks[:-1])
    # each chunk after the first starts with the previous one's last sentence
    for before, after in itertools.pairwise(chunks):
        last = before.text.rsplit(". ", 1)[-1]
        assert after.text.startswith(last.rstrip(".")), (before.text[-80:], after.text[:80])


def test_chunk_ids_are_stable_and_depend_on_place() -> None:
    a = chunk_id("spa", "faq.md", "FAQ > Parking", None, "Free parking.")
    assert a == chunk_id("spa", "faq.md", "FAQ > Parking", None, "Free parking.")
    assert a != chunk_id("other", "faq.md", "FAQ > Parking", None, "Free parking.")
    assert a != chunk_id("spa", "faq.md", "FAQ > Hours", None, "Free parking.")
    first = chunk_sections("spa", "faq.md", parse_file(DENTAL / "faq.md"))
    again = chunk_sections("spa", "faq.md", parse_file(DENTAL / "faq.md"))
    assert [c.id for c in first] == [c.id for c in again]


def test_html_boilerplate_is_stripped_and_headings_kept() -> None:
    sections = parse_file(DENTAL / "insurance-and-payment.html")
    text = " ".join(" ".join(s.paragraphs) for s in sections)
    headings = {h for s in sections for h in s.path}
    assert "Delta Dental PPO and Delta Dental Premier" in text
    assert "do not accept Medicaid" in text
    for chrome in (
        "Meet the Team",  # nav
        "Gentle family dentistry",  # header
        "All rights reserved",  # footer
        "dataLayer",  # script
        "font-family",  # style
        "Best dentist in Austin",  # aside
        "Get our newsletter",  # form
        "New patient special",  # role=banner
    ):
        assert chrome not in text, chrome
    assert ("Insurance & Payment", "Payment options", "Payment plans") in [s.path for s in sections]
    assert "Patient reviews" not in headings


def test_html_without_main_reads_body() -> None:
    sections = parse_html(
        "<html><body><nav>Home</nav><h2>Hours</h2><p>Open\n   daily<br>from 9.</p>"
        "<table><tr><td>Mon</td><td>9-5</td></tr></table></body></html>"
    )
    assert sections[0].path == ("Hours",)
    assert sections[0].paragraphs[0] == "Open daily from 9."  # <br> is a line, not a paragraph
    assert any("Mon | 9-5" in p for p in sections[0].paragraphs)


def test_pdf_pages_and_headings() -> None:
    sections = parse_file(DENTAL / "patient-policies.pdf")
    pages = {s.page for s in sections}
    assert pages == {1, 2, 3, 4}
    whitening = next(s for s in sections if s.path[-1] == "Teeth whitening")
    assert whitening.page == 2
    assert whitening.path == ("Age Rules and Consent", "Teeth whitening")
    assert "aged 16 and over" in " ".join(whitening.paragraphs)
    text = " ".join(" ".join(s.paragraphs) for s in sections)
    assert "Patient Policies - page" not in text  # the small-print footer is dropped
    chunks = chunk_sections("c", "patient-policies.pdf", sections)
    assert {c.page for c in chunks} == {1, 2, 3, 4}


def test_long_pdf_keeps_page_numbers(tmp_path: Path) -> None:
    path = tmp_path / "long.pdf"
    write_pdf(path, long_pages(9))
    sections = parse_file(path)
    assert max(s.page or 0 for s in sections) >= 9
    assert any(s.page == 7 and "part 7" in s.path[0] for s in sections)


def test_unreadable_file_names_itself(tmp_path: Path) -> None:
    bad = tmp_path / "broken.pdf"
    bad.write_bytes(b"%PDF-1.4 this is not a pdf")
    with pytest.raises(KnowledgeFileError) as caught:
        parse_file(bad, "broken.pdf")
    assert caught.value.file == "broken.pdf"
