"""CPU priorities inside one process: the event loop (cache hits, microseconds of work each) first, the
embedder (first-time paraphrases) next, the model's decoding last. On a box where decoding would take
every core, hits would otherwise queue behind it. Linux schedules nice per thread, and a thread's nice is
inherited by the threads it starts (llama.cpp's OpenMP workers, ONNX Runtime's pool)."""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Callable, TypeVar

log = logging.getLogger("edge_ai")

T = TypeVar("T")


def lower_priority(nice: int) -> None:
    """Run the calling thread `nice` steps lower than the process."""
    # Linux only: elsewhere PRIO_PROCESS with a thread id would name a process, not this thread
    if nice <= 0 or not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + nice)
    except OSError as exc:
        log.warning("could not lower a thread's priority: %s", exc)


def started_at(nice: int, make: Callable[[], T]) -> T:
    """`make()` run on a thread `nice` steps lower, so the worker threads it starts are lower too."""
    if nice <= 0:
        return make()
    out: dict[str, object] = {}

    def run() -> None:
        lower_priority(nice)
        try:
            out["value"] = make()
        except BaseException as exc:  # re-raised on the caller's thread
            out["error"] = exc

    t = threading.Thread(target=run, name="edge-ai-start")
    t.start()
    t.join()
    if "error" in out:
        raise out["error"]  # type: ignore[misc]
    return out["value"]  # type: ignore[return-value]
