"""The speech accuracy bench's case table is sound (no audio, no models, no timing)."""

from __future__ import annotations

from bench import speech_accuracy as bench


def test_case_table_is_sound() -> None:
    assert bench.check_cases() == []
    assert len(bench.CASES) >= 36


def test_every_case_has_a_value_fitting_its_slot() -> None:
    for case in bench.CASES:
        assert case.slot in (*bench.SLOTS, None), case
        assert (case.expected is None) == (case.slot is None), case


def test_check_cases_reports_a_bad_value() -> None:
    bad = bench.Case("my number is five five five", "phone", "555")
    assert any("not a canonical phone" in p for p in bench.check_cases([*bench.CASES, bad]))


def test_spoken_and_written_numbers_normalise_alike() -> None:
    spoken = bench.normalize_words("six one seven, double five five, oh one four eight")
    assert spoken == bench.normalize_words("617-555-0148")
    assert bench.normalize_words("L O P E Z") == bench.normalize_words("Lopez")
    assert bench.normalize_words("maria dot lopez at example dot com") == bench.normalize_words(
        "maria.lopez@example.com"
    )
