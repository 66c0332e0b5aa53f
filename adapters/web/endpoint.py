"""PLACEHOLDER, being replaced by the real endpoint."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter


@dataclass(frozen=True)
class WebLimits:
    max_frame_bytes: int = 8192
    max_text_chars: int = 2000
    rate_per_s: float = 2.0
    rate_burst: int = 10


def web_router() -> APIRouter:
    return APIRouter()
