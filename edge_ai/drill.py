"""An outage drill: traffic through edge-ai in gateway mode while a fake cloud goes down and comes back.

Phases: healthy (the cache fills through write-through), outage (the cloud fails in the chosen way),
recovery (healthy again). Prints requests, client-visible failures (the goal is 0), time to open the
breaker, time to recover, and answers by source.
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx

from edge_ai.fake_cloud import FakeCloud

QUESTIONS = [
    "What is the capital of France?", "How do I reset my password?", "Why is the sky blue?",
    "How do vaccines work?", "What causes earthquakes?", "How far is the Moon?",
    "What is machine learning?", "How do I boil an egg?", "What is inflation?", "Who wrote Hamlet?",
]


@dataclass
class DrillReport:
    requests: int = 0
    failures: int = 0
    by_source: Counter = field(default_factory=Counter)
    by_phase: dict[str, Counter] = field(default_factory=dict)
    breaker_open_s: float | None = None
    recover_s: float | None = None
    errors: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        out = [
            f"requests:                {self.requests}",
            f"client-visible failures: {self.failures}",
            f"time to open breaker:    {_fmt(self.breaker_open_s)}",
            f"time to recover:         {_fmt(self.recover_s)}",
            "answers by source:       " + ", ".join(f"{k}={v}" for k, v in sorted(self.by_source.items())),
        ]
        for phase, c in self.by_phase.items():
            out.append(f"  {phase:<9}" + ", ".join(f"{k}={v}" for k, v in sorted(c.items())))
        out += [f"  error: {e}" for e in self.errors[:5]]
        return out


def _fmt(s: float | None) -> str:
    return "n/a" if s is None else f"{s:.2f}s"


def run_drill(
    *, failure: str = "status", code: int = 529, phase_s: float = 8.0, clients: int = 4, max_tokens: int = 16,
    model: str | None = None, port: int = 0, settle_s: float = 60.0,
) -> DrillReport:
    import uvicorn

    from edge_ai.server.app import create_app
    from edge_ai.config import Settings, UpstreamConfig

    cloud = FakeCloud().start()
    ups = [
        UpstreamConfig(name="claude", dialect="anthropic", base_url=cloud.url, api_key="k", first_byte_timeout=2.0),
        UpstreamConfig(name="gpt", dialect="openai", base_url=cloud.url, api_key="k", first_byte_timeout=2.0),
    ]
    settings = Settings(
        cache_dir=tempfile.mkdtemp(prefix="edge-drill-"), upstreams=ups, breaker_failures=3, breaker_cooldown=2.0,
        n_slots=8, port=port or _free_port(), **({"model": model} if model else {}),
    )
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=settings.port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    url = f"http://127.0.0.1:{settings.port}"
    report = DrillReport()
    try:
        _wait_ready(url)
        phase = {"name": "healthy"}
        stop = threading.Event()
        lock = threading.Lock()

        def client(i: int) -> None:
            rng = random.Random(i)
            with httpx.Client(base_url=url, timeout=60) as http:
                while not stop.is_set():
                    q = rng.choice(QUESTIONS)
                    name = phase["name"]
                    try:
                        source = _one_request(http, rng, q, max_tokens)
                        ok = True
                    except Exception as exc:  # noqa: BLE001 - every failure is what the drill counts
                        source, ok = "failed", False
                        with lock:
                            report.errors.append(f"{name}: {exc}")
                    with lock:
                        report.requests += 1
                        report.failures += not ok
                        report.by_source[source] += 1
                        report.by_phase.setdefault(name, Counter())[source] += 1

        pool = ThreadPoolExecutor(clients)
        for i in range(clients):
            pool.submit(client, i)
        time.sleep(phase_s)

        # Each phase lasts phase_s, and the outage and the recovery last until the breakers have done what
        # they are for (up to `settle_s` more): on a loaded box the consecutive failures that open a breaker
        # can take longer than a phase. The times reported are the breakers' own recorded transitions.
        phase["name"] = "outage"
        t0 = time.time()
        if failure == "status":
            cloud.set("status", code=code)
        else:
            cloud.set(failure, delay=5.0, cut_after=4)
        _wait_until(url, lambda ups: _first(ups, "open", t0) is not None, phase_s, phase_s + settle_s, t0)
        report.breaker_open_s = _since(_first(_upstreams(url), "open", t0), t0)

        phase["name"] = "recovery"
        t1 = time.time()
        cloud.set("healthy")
        _wait_until(url, lambda ups: _recovered(ups, t1) is not None, phase_s, phase_s + settings.breaker_cooldown + settle_s, t1)
        report.recover_s = _since(_recovered(_upstreams(url), t1), t1)
        stop.set()
        pool.shutdown(wait=True)
    finally:
        server.should_exit = True
        serving.join(60)  # the lifespan stops the engines before the interpreter may exit
        cloud.stop()
    return report


def _one_request(http: httpx.Client, rng: random.Random, q: str, max_tokens: int) -> str:
    stream = rng.random() < 0.5
    if rng.random() < 0.5:
        body = {"model": "claude-sonnet-4-5", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": q}]}
        path, done = "/v1/messages", "message_stop"
    else:
        body = {"model": "gpt-4o", "max_tokens": max_tokens, "stream": stream, "messages": [{"role": "user", "content": q}]}
        path, done = "/v1/chat/completions", "[DONE]"
    if not stream:
        r = http.post(path, json=body)
        r.raise_for_status()
        r.json()
        return r.headers["x-edge-source"]
    with http.stream("POST", path, json=body) as r:
        r.raise_for_status()
        text = "".join(r.iter_text())
        if done not in text or '"error"' in text:
            raise RuntimeError(f"stream did not finish cleanly: {text[-200:]!r}")
        return r.headers["x-edge-source"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str) -> None:
    for _ in range(900):
        try:
            if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("edge-ai did not become ready")


def _upstreams(url: str) -> list[dict]:
    return httpx.get(url + "/readyz", timeout=10).json().get("upstreams", [])


def _first(ups: list[dict], state: str, since: float) -> float | None:
    """When the first breaker entered `state` at or after `since` (wall clock), from the recorded transitions."""
    times = [t["at"] for u in ups for t in u.get("transitions", []) if t["state"] == state and t["at"] >= since]
    return min(times) if times else None


def _recovered(ups: list[dict], since: float) -> float | None:
    """When every breaker is closed again: the latest close after `since`, or None while one is not closed."""
    if not ups or any(u["state"] != "closed" for u in ups):
        return None
    closes = [t["at"] for u in ups for t in u.get("transitions", []) if t["state"] == "closed" and t["at"] >= since]
    return max(closes, default=since)


def _since(at: float | None, t0: float) -> float | None:
    return None if at is None else max(0.0, at - t0)


def _wait_until(url: str, done, at_least: float, at_most: float, since: float) -> None:
    """Run the phase for `at_least` seconds and until `done(upstreams)`, at most `at_most` seconds."""
    while True:
        elapsed = time.time() - since
        if elapsed >= at_most or (elapsed >= at_least and done(_upstreams(url))):
            return
        time.sleep(0.1)
