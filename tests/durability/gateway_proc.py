"""Run the real gateway (uvicorn) in this process, for tests that kill it.

    python tests/durability/gateway_proc.py --port P

Settings come from the environment as for ``gateway serve``. Two test-only
variables, read here and nowhere in the product:

``GATEWAY_TEST_NOW``
    ISO-8601 instant the engine takes as "now" (so a slot stays bookable).
``GATEWAY_TEST_CRASH_AT``
    Where the process kills itself with SIGKILL (no cleanup, no flush — as a
    power cut or the OOM killer would):

    - ``lead_write``: inside a turn's commit transaction, after the booking row
      and while the lead is being written;
    - ``after_commit``: right after a turn's commit, before the outbox worker
      could deliver anything it enqueued;
    - ``after_delivery``: after a vendor accepted an outbox delivery, before the
      row is marked delivered;
    - ``after_staff_reply``: after a staff reply's commit, before the open
      widget is signalled and before the admin API answers;
    - ``messaging_turn``: inside a WhatsApp/SMS turn's commit transaction,
      after the engine wrote the turn and before its reply rows (the
      messages it claimed stay ``processing`` with a lease).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _die(*_: Any, **__: Any) -> None:
    sys.stderr.write("crash point reached: SIGKILL\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _install_crash(point: str) -> None:
    from engine.bus import ConversationBus
    from engine.outbox import Outbox
    from engine.tools.crm import LeadLedger
    from providers.redis.bus import RedisConversationBus

    if point == "lead_write":
        LeadLedger.record_in = _die  # type: ignore[method-assign,assignment]
    elif point == "after_commit":
        Outbox.wake = _die  # type: ignore[method-assign,assignment]
    elif point == "after_delivery":
        original = Outbox.settle

        async def settle(self: Outbox, row_id: int, worker_id: str, state: Any, **kw: Any) -> bool:
            if state == "delivered":
                _die()
            return await original(self, row_id, worker_id, state, **kw)

        Outbox.settle = settle  # type: ignore[method-assign]
    elif point == "after_staff_reply":
        ConversationBus.publish = _die  # type: ignore[method-assign,assignment]
        RedisConversationBus.publish = _die  # type: ignore[method-assign,assignment]
    elif point == "messaging_turn":
        from channels.whatsapp.worker import ReplyHook

        ReplyHook.__call__ = _die  # type: ignore[method-assign,assignment]
    elif point:
        raise SystemExit(f"unknown GATEWAY_TEST_CRASH_AT {point!r}")


def main() -> None:
    import uvicorn

    from gateway.app import create_app
    from gateway.settings import Settings

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _install_crash(os.environ.get("GATEWAY_TEST_CRASH_AT", ""))
    now = os.environ.get("GATEWAY_TEST_NOW")
    pinned = datetime.fromisoformat(now) if now else None
    app = create_app(Settings(), clock=(lambda: pinned) if pinned else None)  # type: ignore[call-arg,return-value]
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", lifespan="on")


if __name__ == "__main__":
    main()
