"""What every asyncio task of the worker is waiting for, for an operator chasing a stall.

``kill -USR2 <worker pid>`` logs, for each task, the chain of coroutines it is awaiting down
to the innermost line (mode's own SIGUSR1 dump stops at Faust's async generators and agent
wrappers, which is where a stalled agent usually is).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

log = logging.getLogger(__name__)


def await_chain(awaitable: Any) -> list[str]:
    """``file:line function`` of each coroutine ``awaitable`` is suspended in, outermost
    first, following awaited coroutines, generators and asynchronous generators."""
    chain: list[str] = []
    seen: set[int] = set()
    current = awaitable
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frame = (
            getattr(current, "cr_frame", None)
            or getattr(current, "ag_frame", None)
            or getattr(current, "gi_frame", None)
        )
        if frame is not None:
            chain.append(f"{frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}")
        following = (
            getattr(current, "cr_await", None)
            or getattr(current, "ag_await", None)
            or getattr(current, "gi_yieldfrom", None)
        )
        if following is None and isinstance(current, asyncio.Future):
            following = getattr(current, "_coro", None)
        current = following
    return chain


def log_tasks(app: Any = None) -> None:
    if app is not None:
        for agent in app.agents.values():
            for trace in agent.actor_tracebacks():
                log.warning("agent %s awaits:\n%s", agent.name, trace)
    tasks = asyncio.all_tasks()
    log.warning("%d asyncio tasks; what each awaits (outermost first):", len(tasks))
    for task in sorted(tasks, key=lambda t: t.get_name()):
        chain = await_chain(task.get_coro())
        log.warning("task %s:\n    %s", task.get_name(), "\n    ".join(chain) or "(no frame)")


def install_task_dump(loop: asyncio.AbstractEventLoop, app: Any = None) -> None:
    loop.add_signal_handler(signal.SIGUSR2, log_tasks, app)
