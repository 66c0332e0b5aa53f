"""The tasks of one phone call, so none outlives it.

Two groups: the call's own work (the playback pump, speaking, answering, DTMF
timers), cancelled at hang-up; and engine-side work (engine turns, recording
what the caller heard, saving the trace), which gets
:data:`SHUTDOWN_GRACE_S` to finish at hang-up, so the caller's last words
and the call's bookkeeping are saved, not dropped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from channels.phone.failures import log_failure

__all__ = ["SHUTDOWN_GRACE_S", "CallTasks"]

log = logging.getLogger("channels.phone.tasks")

SHUTDOWN_GRACE_S = 10.0
"""How long engine-side tasks still running at hang-up get to finish (seconds)."""


class CallTasks:
    """Every task of one call; :meth:`cancel` and :meth:`drain` end them at hang-up.

    A task that fails is logged with its exception's type name (see
    :mod:`channels.phone.failures`), never its text.

    Args:
        call_sid: for log lines.
    """

    def __init__(self, call_sid: str) -> None:
        self.call_sid = call_sid
        self._own: set[asyncio.Task[None]] = set()
        self._engine: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as the call's own work (cancelled at hang-up)."""
        return self._add(asyncio.create_task(coro), self._own)

    def spawn_engine(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` as engine-side work (awaited at hang-up, up to the grace)."""
        return self._add(asyncio.create_task(coro), self._engine)

    def adopt_engine(self, task: asyncio.Task[None]) -> None:
        """Track ``task`` (which handles its own errors) as engine-side work."""
        self._engine.add(task)
        task.add_done_callback(self._engine.discard)

    async def cancel(self) -> None:
        """Cancel the call's own tasks and wait until they are gone."""
        own = list(self._own)
        for task in own:
            task.cancel()
        await asyncio.gather(*own, return_exceptions=True)

    async def drain(self) -> None:
        """Give the engine-side tasks up to :data:`SHUTDOWN_GRACE_S`; cancel what is left."""
        if self._engine:  # the caller's last words are saved, not dropped
            await asyncio.wait(list(self._engine), timeout=SHUTDOWN_GRACE_S)
            for task in self._engine:
                task.cancel()

    def _add(self, task: asyncio.Task[None], group: set[asyncio.Task[None]]) -> asyncio.Task[None]:
        group.add(task)
        task.add_done_callback(group.discard)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (exc := task.exception()) is not None:
            log_failure(log, logging.ERROR, exc, "call %s: task failed", self.call_sid)
