"""Run a per-file function in worker processes, each call with a deadline, surviving crashes of C decoders.

Why not ``concurrent.futures.ProcessPoolExecutor``: one segfault there breaks the whole pool (every pending future
fails with ``BrokenProcessPool``) and a hung call cannot be cancelled. Here each worker has its own pipe and works on
one item at a time; the parent waits on pipes and process sentinels together, so it knows exactly which item a dead
or overdue worker held, kills only that worker (SIGKILL), reports the item through ``on_failure`` and starts a fresh
worker. Workers are also recycled after ``max_tasks`` items to bound slow memory growth in native decoders.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Generic, TypeVar

__all__ = ["guarded_map", "WorkerFailure"]

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


@dataclass
class WorkerFailure:
    """Why a worker produced no result for an item.

    Args:
        reason: ``"deadline"`` (killed after ``deadline_s``), ``"crashed"`` (process died, e.g. SIGSEGV in a C
            decoder) or ``"raised"`` (the function raised; it should not).
        detail: exit code / seconds / exception class name.
    """

    reason: str
    detail: str


def _worker_loop(conn: Connection, fn: Callable[[Any], Any]) -> None:  # pragma: no cover - runs in a child
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        index, item = task
        try:
            result: Any = ("ok", fn(item))
        except BaseException as err:  # report, keep serving
            result = ("raised", type(err).__name__)
        try:
            conn.send((index, result))
        except (BrokenPipeError, OSError):
            return


@dataclass
class _Slot(Generic[T]):
    process: Any
    conn: Connection
    index: int = -1
    item: Any = None
    started: float = 0.0
    done: int = 0

    @property
    def busy(self) -> bool:
        return self.index >= 0


def _context(name: str | None) -> Any:
    if name:
        return multiprocessing.get_context(name)
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")


def guarded_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    on_failure: Callable[[T, WorkerFailure], R],
    workers: int = 2,
    deadline_s: float = 60.0,
    max_tasks: int = 1000,
    start_method: str | None = None,
) -> Iterator[tuple[int, R]]:
    """Apply ``fn`` to every item in worker processes; yield ``(index, result)`` in completion order.

    Args:
        fn: a picklable module-level function (it runs in the workers).
        items: the inputs (picklable).
        on_failure: builds the result for an item whose worker crashed, overran its deadline or raised.
        workers: worker processes; 0 runs ``fn`` in this process (no crash or deadline protection; debugging only).
        deadline_s: wall-clock seconds one item may take before its worker is killed.
        max_tasks: items per worker before it is replaced by a fresh one.
        start_method: multiprocessing start method (default forkserver where available, else spawn).

    Yields:
        ``(index into items, result)``; every item yields exactly once.
    """
    if workers <= 0:
        for index, item in enumerate(items):
            try:
                yield index, fn(item)
            except Exception as err:
                yield index, on_failure(item, WorkerFailure("raised", type(err).__name__))
        return
    ctx = _context(start_method)
    pending = iter(enumerate(items))
    slots: list[_Slot] = []

    def spawn() -> _Slot:
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_worker_loop, args=(child, fn), daemon=True)
        proc.start()
        child.close()
        return _Slot(process=proc, conn=parent)

    def retire(slot: _Slot, *, kill: bool) -> None:
        try:
            if kill:
                slot.process.kill()
            else:
                slot.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        slot.process.join(timeout=5)
        if slot.process.is_alive():
            slot.process.kill()
            slot.process.join(timeout=5)
        slot.conn.close()

    def feed(slot: _Slot) -> bool:
        nxt = next(pending, None)
        if nxt is None:
            return False
        slot.index, slot.item = nxt
        slot.started = time.monotonic()
        slot.conn.send(nxt)
        return True

    try:
        for _ in range(workers):
            slot = spawn()
            if feed(slot):
                slots.append(slot)
            else:
                retire(slot, kill=False)
                break
        while any(s.busy for s in slots):
            busy = [s for s in slots if s.busy]
            now = time.monotonic()
            timeout = max(0.0, min(s.started + deadline_s for s in busy) - now)
            ready = wait([s.conn for s in busy] + [s.process.sentinel for s in busy], timeout=timeout)
            for i, slot in enumerate(list(slots)):
                if not slot.busy:
                    continue
                outcome: R | None = None
                replace = False
                if slot.conn in ready:
                    try:
                        index, (kind, value) = slot.conn.recv()
                        outcome = value if kind == "ok" else on_failure(slot.item, WorkerFailure("raised", value))
                        slot.done += 1
                    except (EOFError, OSError):
                        slot.process.join(timeout=5)
                        code = slot.process.exitcode
                        outcome = on_failure(slot.item, WorkerFailure("crashed", f"exit:{code}"))
                        replace = True
                elif slot.process.sentinel in ready or not slot.process.is_alive():
                    slot.process.join(timeout=5)
                    outcome = on_failure(slot.item, WorkerFailure("crashed", f"exit:{slot.process.exitcode}"))
                    replace = True
                elif time.monotonic() - slot.started > deadline_s:
                    outcome = on_failure(slot.item, WorkerFailure("deadline", f"{deadline_s:g}s"))
                    replace = True
                else:
                    continue
                index = slot.index
                if replace:
                    logger.warning("worker for item %d failed (crash or deadline); starting a new one", index)
                    retire(slot, kill=True)
                    slot = slots[i] = spawn()
                elif slot.done >= max_tasks:
                    retire(slot, kill=False)
                    slot = slots[i] = spawn()
                slot.index, slot.item = -1, None
                yield index, outcome  # type: ignore[misc]
                feed(slot)
    finally:
        for slot in slots:
            retire(slot, kill=slot.busy)
