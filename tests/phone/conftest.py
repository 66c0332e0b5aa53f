"""Shared fixtures of the phone tests."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import FrameType

import pytest


@pytest.fixture
def deadline() -> Iterator[None]:
    """Fail (instead of hanging) if a blocking websocket read never returns: 90 s per test."""

    def expire(_signum: int, _frame: FrameType | None) -> None:
        raise TimeoutError("test took too long")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(90)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
