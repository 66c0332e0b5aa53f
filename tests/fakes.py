"""Small fakes shared by tests."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeClock:
    """Epoch seconds that only move when a test says so."""

    now: float

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
