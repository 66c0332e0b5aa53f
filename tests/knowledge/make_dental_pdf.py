"""Makes Bright Smile Dental's ``patient-policies.pdf`` (committed; rerun after an edit)
and synthetic long PDFs for the benchmark. Needs fpdf2 (the ``dev`` extra).

    .venv/bin/python -m tests.knowledge.make_dental_pdf   # rewrites the client's PDF

Headings are set in a larger font than body text: that is how the PDF parser
finds sections (``providers.knowledge.parsers``).
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "clients" / "bright-smile-dental" / "knowledge" / "patient-policies.pdf"

# (page title, [(section heading, [paragraphs])]) - one page each
PAGES: list[tuple[str, list[tuple[str, list[str]]]]] = [
    (
        "Appointments and Cancellations",
        [
            (
                "Cancellation policy",
                [
                    "Please give us at least 48 hours' notice if you need to cancel or "
                    "reschedule an appointment. You can call us, reply to your reminder "
                    "text, or use the link in your confirmation email.",
                    "Appointments cancelled with less than 48 hours' notice are charged a "
                    "$50 late cancellation fee. Missed appointments without any notice are "
                    "charged $75. After three missed appointments in one year we may ask "
                    "for a deposit before booking again.",
                ],
            ),
            (
                "Running late",
                [
                    "If you arrive more than 15 minutes late we may need to shorten your "
                    "treatment or move you to another day, so that patients after you are "
                    "not kept waiting.",
                ],
            ),
            (
                "Reminders",
                [
                    "We send a reminder by text message and email three days before your "
                    "visit and again the day before.",
                ],
            ),
        ],
    ),
    (
        "Age Rules and Consent",
        [
            (
                "Teeth whitening",
                [
                    "Professional teeth whitening, in the office or with take-home trays, "
                    "is available only to patients aged 16 and over, because younger "
                    "patients' enamel and nerves are still developing. Patients aged 16 "
                    "and 17 need a parent or guardian's signed consent.",
                    "Whitening is not recommended during pregnancy or while breastfeeding.",
                ],
            ),
            (
                "Minors",
                [
                    "Patients under 18 must be accompanied by a parent or legal guardian "
                    "at every visit. A grandparent or other adult may bring a child only "
                    "with a signed authorization form from the parent on file.",
                ],
            ),
            (
                "Orthodontic screening",
                [
                    "We recommend a first orthodontic screening at age 7. Braces and clear "
                    "aligners are provided by our partner orthodontist, Dr. Lena Ortiz, who "
                    "sees patients in our office every second Thursday.",
                ],
            ),
        ],
    ),
    (
        "Emergencies and After-Hours Care",
        [
            (
                "Same-day emergencies",
                [
                    "Existing and new patients with dental pain, swelling, a broken tooth or "
                    "a knocked-out tooth are seen the same day whenever we are open. The "
                    "emergency exam costs $95 and includes any X-ray needed to diagnose the "
                    "problem; treatment is quoted before we start.",
                ],
            ),
            (
                "Knocked-out tooth",
                [
                    "Pick the tooth up by the crown, not the root, rinse it gently without "
                    "scrubbing, and keep it in milk or in your cheek. Call us at once: a "
                    "tooth replanted within 60 minutes has the best chance of being saved.",
                ],
            ),
            (
                "After hours",
                [
                    "Outside office hours, call (512) 555-0100 and choose option 2 to reach "
                    "the dentist on call, who can advise you and, if needed, meet you at the "
                    "office. After-hours emergency visits carry a $150 call-out fee.",
                ],
            ),
        ],
    ),
    (
        "Privacy and Records",
        [
            (
                "Your records",
                [
                    "We keep your dental records for at least seven years after your last "
                    "visit. You can ask for a copy of your records and X-rays at any time; "
                    "we send them securely within 5 business days, free of charge.",
                ],
            ),
            (
                "Transferring from another dentist",
                [
                    "Ask your previous dentist to email your X-rays and treatment notes to "
                    "records@brightsmiledental.example before your first visit, so we do not "
                    "need to repeat recent X-rays.",
                ],
            ),
        ],
    ),
]


def write_pdf(path: Path, pages: list[tuple[str, list[tuple[str, list[str]]]]]) -> None:
    """Write ``pages`` to ``path``: one page each, page title 18 pt, headings 14 pt,
    body 11 pt (Helvetica), a footer line with the page number."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(True, margin=18)
    pdf.set_title("Bright Smile Dental - Patient Policies")

    def footer() -> None:
        pdf.set_y(-12)
        pdf.set_font("Helvetica", "", 8)
        pdf.cell(0, 6, f"Bright Smile Dental - Patient Policies - page {pdf.page_no()}", align="C")

    pdf.footer = footer  # type: ignore[method-assign]
    for title, sections in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", "B", 18)
        pdf.multi_cell(0, 10, title, new_x="LMARGIN", new_y="NEXT")
        for heading, paragraphs in sections:
            pdf.ln(3)
            pdf.set_font("Helvetica", "B", 14)
            pdf.multi_cell(0, 8, heading, new_x="LMARGIN", new_y="NEXT")
            pdf.set_font("Helvetica", "", 11)
            for paragraph in paragraphs:
                pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
                pdf.ln(3)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))


def long_pages(count: int) -> list[tuple[str, list[tuple[str, list[str]]]]]:
    """``count`` pages of handbook-like text (for the 200-page benchmark PDF)."""
    out = []
    for n in range(count):
        base = PAGES[n % len(PAGES)]
        sections = [
            (
                f"{heading} ({n + 1}.{i + 1})",
                [f"Revision {n + 1}. {p}" for p in paragraphs] * 2,
            )
            for i, (heading, paragraphs) in enumerate(base[1])
        ]
        out.append((f"{base[0]} - part {n + 1}", sections))
    return out


if __name__ == "__main__":
    write_pdf(POLICIES, PAGES)
    print(f"wrote {POLICIES}")
