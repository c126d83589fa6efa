"""CPU priorities inside one process: the event loop (cache hits, microseconds of work each) first, the
embedder (first-time paraphrases) next, the model's decoding last. On a box where decoding would take
every core, hits would otherwise queue behind it. Linux schedules nice per thread, and a thread's nice is
inherited by the threads it starts (llama.cpp's OpenMP workers, ONNX Runtime's pool)."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator, TypeVar

log = logging.getLogger("edge_ai")

T = TypeVar("T")


# How many times an idle OpenMP thread polls before it sleeps. libgomp's default is 300,000: 15-20 ms on
# a Xeon (a pause instruction is ~140 cycles there), at every barrier inside a decode step and after each
# step. Where the cores are shared, a decode thread whose partner was preempted by the event loop or the
# embedder spun for that long: half the decode threads' CPU in a surge, taken from the hits. 10,000 polls
# (under a millisecond) still cover a barrier whose threads are all running (RELIABILITY.md, "Spinning").
OMP_SPIN_COUNT = 10_000


def bound_spinning() -> None:
    """Bound llama.cpp's OpenMP spin-waiting, unless GOMP_SPINCOUNT is set already. libgomp reads it once,
    when it is loaded: call this before llama_cpp is imported."""
    os.environ.setdefault("GOMP_SPINCOUNT", str(OMP_SPIN_COUNT))


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


YIELD_MAX_S = 0.25  # the longest a decode step waits for the embedder: decoding still gets a share under a flood


class CpuTurns:
    """Whose turn the cores are: an embedder pass goes before the model's next decode step.

    Both pools are sized to every core (llama.cpp's decode threads, ONNX Runtime's intra-op pool). Run
    together on two cores they oversubscribe them, and llama.cpp's threads meet at a barrier after every
    operation, so each pool waits on the other's preemptions. A pass embeds a paraphrase that is about to be
    served from the cache (milliseconds of work for a whole answer); a decode step moves every slot one
    token. So while a pass runs the decode thread does not start its next step, for at most `max_wait_s`
    at a time. The pass never waits for a step already running. Nice values cannot express this (see
    RELIABILITY.md: a lowered decode thread stalls whenever another process holds a core)."""

    def __init__(self, max_wait_s: float = YIELD_MAX_S) -> None:
        self.max_wait_s = max_wait_s
        self.yielded_s = 0.0  # the decode thread's time waiting for passes: what the embedder took from it
        self._lock = threading.Lock()
        self._passes = 0
        self._idle = threading.Event()
        self._idle.set()

    @contextmanager
    def first(self) -> Iterator[None]:
        """Work that goes before the next decode step (the embedder's passes)."""
        with self._lock:
            self._passes += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._passes -= 1
                if not self._passes:
                    self._idle.set()

    @property
    def busy(self) -> bool:
        """A pass is running."""
        return not self._idle.is_set()

    def before_step(self) -> None:
        """The decode thread, before each step: wait while a pass runs (at most `max_wait_s`)."""
        if self._idle.is_set():
            return
        start = time.perf_counter()
        self._idle.wait(self.max_wait_s)
        self.yielded_s += time.perf_counter() - start
