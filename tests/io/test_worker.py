"""Guarded worker pool: a crashing or hanging item costs only that item; every item yields exactly once."""

from __future__ import annotations

import os
import signal
import time

from clinmm.io.worker import WorkerFailure, guarded_map


def _work(item: int) -> str:
    if item == 3:
        os.kill(os.getpid(), signal.SIGSEGV)  # what a crashing C decoder does
    if item == 5:
        time.sleep(60)  # a hung decoder
    if item == 7:
        raise RuntimeError("escaped")
    return f"ok:{item}"


def _failed(item: int, failure: WorkerFailure) -> str:
    return f"{failure.reason}:{item}"


def test_crash_deadline_and_exception_are_contained() -> None:
    start = time.monotonic()
    results = dict(guarded_map(_work, range(10), on_failure=_failed, workers=2, deadline_s=3.0, max_tasks=3))
    assert time.monotonic() - start < 40
    assert sorted(results) == list(range(10))
    assert results[3] == "crashed:3"
    assert results[5] == "deadline:5"
    assert results[7] == "raised:7"
    assert all(results[i] == f"ok:{i}" for i in (0, 1, 2, 4, 6, 8, 9))


def test_in_process_mode_and_empty_input() -> None:
    assert dict(guarded_map(_work, [0, 7], on_failure=_failed, workers=0)) == {0: "ok:0", 1: "raised:7"}
    assert list(guarded_map(_work, [], on_failure=_failed, workers=2)) == []
