"""Paraphrased questions over the shipped example clients, with where the answer is.

``(client_id, question, file, section substring)``: the passage that answers
is in ``file`` and its section path contains the substring. Written for the
tests, not copied from the documents.
"""

from __future__ import annotations

QUESTIONS: list[tuple[str, str, str, str]] = [
    ("spa-del-sol", "can I leave my car somewhere near you?", "faq.md", "located"),
    (
        "spa-del-sol",
        "how much notice do I need to give to call off a booking?",
        "faq.md",
        "cancellation",
    ),
    ("spa-del-sol", "do you have vouchers I could give my mom?", "faq.md", "gift cards"),
    ("spa-del-sol", "I use a wheelchair, can I get in?", "faq.md", "wheelchair"),
    ("spa-del-sol", "do I need to bring towels or a robe?", "faq.md", "bring"),
    (
        "bright-smile-dental",
        "do you take Cigna?",
        "insurance-and-payment.html",
        "Insurance we accept",
    ),
    (
        "bright-smile-dental",
        "is my Medicaid plan any good at your office?",
        "insurance-and-payment.html",
        "do not accept",
    ),
    (
        "bright-smile-dental",
        "can I spread the cost of treatment over a few months?",
        "insurance-and-payment.html",
        "Payment plans",
    ),
    (
        "bright-smile-dental",
        "can my 14-year-old get her teeth whitened?",
        "patient-policies.pdf",
        "whitening",
    ),
    (
        "bright-smile-dental",
        "what is the fee if I cancel the day before?",
        "patient-policies.pdf",
        "Cancellation",
    ),
    (
        "bright-smile-dental",
        "my son knocked a tooth out playing football, what do I do?",
        "patient-policies.pdf",
        "Knocked-out",
    ),
    ("bright-smile-dental", "is there somewhere to park at your building?", "faq.md", "park"),
    ("bright-smile-dental", "how long does the first appointment take?", "faq.md", "first visit"),
    ("bright-smile-dental", "I'm pregnant, is it safe to get x-rays?", "faq.md", "X-rays"),
    ("bright-smile-dental", "do you treat toddlers?", "faq.md", "children"),
    (
        "bright-smile-dental",
        "I have no dental insurance, do you have a membership?",
        "insurance-and-payment.html",
        "membership",
    ),
    (
        "bright-smile-dental",
        "can you give me laughing gas, I'm scared of the dentist",
        "faq.md",
        "sedation",
    ),
    (
        "bright-smile-dental",
        "who do I call at night if my face is swollen?",
        "patient-policies.pdf",
        "After hours",
    ),
]
