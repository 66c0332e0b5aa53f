"""The gateway's record of a call, as ``GET /admin/api/calls/{call_sid}`` serves it.

For tools that place simulated calls (``gateway call``, ``bench.phone_calls``)
and want the server's side next to what the caller measured: per turn the
stage durations (in ms) and the text, and the barge-ins.

Test-only: production code never imports :mod:`testkit.phone`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from channels.phone.trace import STAGES as TRACE_STAGES

__all__ = [
    "STAGES",
    "CallReport",
    "ServerBargeIn",
    "ServerTurn",
    "fetch_call_report",
    "parse_call_report",
]

STAGES = TRACE_STAGES
"""The gateway's per-turn stages, in pipeline order (keys of a turn's ``stages_ms``)."""


@dataclass(frozen=True, slots=True)
class ServerTurn:
    """One turn as the gateway measured it. Durations in ms; a stage it did not report is absent.

    ``kind`` is ``greeting``, ``speech``, ``dtmf`` or ``reprompt``.
    """

    index: int
    kind: str
    user_text: str
    reply_text: str
    stages_ms: dict[str, float]
    end_of_speech_to_first_media_ms: float | None
    interrupted: bool
    heard_text: str


@dataclass(frozen=True, slots=True)
class ServerBargeIn:
    """A barge-in as the gateway saw it: ``reaction_ms`` (caller speech -> ``clear``) and
    ``outcome`` (``interrupted``, or ``resumed`` when it was a backchannel)."""

    reaction_ms: float | None
    outcome: str


@dataclass(frozen=True, slots=True)
class CallReport:
    """``GET /admin/api/calls/{call_sid}``: the gateway's record of one call."""

    call_sid: str
    client_id: str
    turns: tuple[ServerTurn, ...]
    barge_ins: tuple[ServerBargeIn, ...]

    def turns_of_kind(self, *kinds: str) -> list[ServerTurn]:
        return [turn for turn in self.turns if turn.kind in kinds]


async def fetch_call_report(
    base_url: str, call_sid: str, admin_token: str | None, *, timeout_s: float = 5.0
) -> CallReport | None:
    """The gateway's report of call ``call_sid``, or None when it has none.

    ``base_url`` is the gateway's HTTP (or ws) base URL, e.g.
    ``http://127.0.0.1:8080``. None is returned when there is no token, the
    admin API is off or does not know the call (404), or the request fails:
    callers then report client-side figures only.
    """
    if not admin_token:
        return None
    url = _http_base(base_url) + f"/admin/api/calls/{call_sid}"
    try:
        async with httpx.AsyncClient(timeout=timeout_s) as http:
            response = await http.get(url, headers={"Authorization": f"Bearer {admin_token}"})
        if response.status_code != 200:
            return None
        return parse_call_report(response.json())
    except (httpx.HTTPError, ValueError, TypeError, KeyError):
        return None


def parse_call_report(data: Any) -> CallReport:
    """Parse the JSON of ``/admin/api/calls/{call_sid}``; missing or null fields are tolerated.

    Raises:
        TypeError, ValueError: not an object, or a field of the wrong type.
    """
    if not isinstance(data, dict):
        raise TypeError("a call report is a JSON object")
    turns: list[ServerTurn] = []
    for raw in data.get("turns") or []:
        if not isinstance(raw, dict):
            raise TypeError("each turn is a JSON object")
        stages = {
            str(name): float(value)
            for name, value in (raw.get("stages_ms") or {}).items()
            if isinstance(value, int | float)
        }
        total = raw.get("end_of_speech_to_first_media_ms")
        turns.append(
            ServerTurn(
                index=int(raw.get("index", len(turns))),
                kind=str(raw.get("kind") or ""),
                user_text=str(raw.get("user_text") or ""),
                reply_text=str(raw.get("reply_text") or ""),
                stages_ms=stages,
                end_of_speech_to_first_media_ms=(
                    float(total) if isinstance(total, int | float) else None
                ),
                interrupted=bool(raw.get("interrupted")),
                heard_text=str(raw.get("heard_text") or ""),
            )
        )
    barge_ins: list[ServerBargeIn] = []
    for raw in data.get("barge_ins") or []:
        if not isinstance(raw, dict):
            raise TypeError("each barge-in is a JSON object")
        reaction = raw.get("reaction_ms")
        barge_ins.append(
            ServerBargeIn(
                reaction_ms=float(reaction) if isinstance(reaction, int | float) else None,
                outcome=str(raw.get("outcome") or ""),
            )
        )
    return CallReport(
        call_sid=str(data.get("call_sid") or ""),
        client_id=str(data.get("client_id") or ""),
        turns=tuple(turns),
        barge_ins=tuple(barge_ins),
    )


def _http_base(url: str) -> str:
    url = url.rstrip("/")
    if url.startswith("ws"):
        url = "http" + url.removeprefix("ws")
    return url
