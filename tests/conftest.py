"""Fixtures: the real edge-ai server (uvicorn in a subprocess on a free port) with the real models."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# The suite runs on SmolLM2-135M: what it tests is edge-ai (the batching core, the cache, the dialects), and
# at ~120 tokens/s a stream SmolLM2 keeps the suite minutes long on two cores; the shipped default
# (Qwen2.5-Coder-1.5B, ~19) is measured by the evals. Tests of tool calls name a coding model themselves.
os.environ.setdefault("EDGE_AI_MODEL", "smollm2")
# Speculation is on by default, and off for the suite's servers: on two threads a row decoded beside its
# slot's draft differs from one decoded alone in the last bits, so a near-tie can answer a prompt two ways
# depending on what else ran, and many tests compare answers across requests. It is tested where it is
# asserted: the engine's identity tests (one thread) and the service's per-answer counts (--speculate).
os.environ.setdefault("EDGE_AI_SPECULATE", "0")


def ticket(text: str, rules: int = 6) -> str:
    """A program's prompt: fixed instructions (rules=6: ~240 embedder tokens, 12: past its 256-token window)
    around the part that varies."""
    head = ("You are a support-ticket classifier. Read the ticket and answer with exactly one label from: billing, "
            "outage, login, feature-request, other. ")
    body = " ".join(f"Rule {i}: tickets that mention topic number {i} in the context of accounts, invoices or "
                    "sessions should be weighed carefully against the other rules before you decide." for i in range(rules))
    return f"{head}{body}\n\nTicket: {text}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A running `edge-ai serve`; `restart()` stops and starts it on the same cache directory."""

    def __init__(self, cache_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.cache_dir = cache_dir
        self.args = args
        self.env = {**os.environ, "EDGE_AI_N_SLOTS": "4", "EDGE_AI_N_CTX_SLOT": "1024",
                    "EDGE_AI_BODY_TIMEOUT": "3", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = cache_dir.parent / f"server-{cache_dir.name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        self.port = self.port or free_port()  # a restart keeps the port, so clients keep working
        cmd = [sys.executable, "-m", "edge_ai", "serve", "--port", str(self.port), "--cache-dir", str(self.cache_dir), *self.args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.log.read_text()[-3000:]}")
            try:
                ready = httpx.get(self.url + "/readyz", timeout=2)
                if ready.status_code == 200:
                    return self
                if ready.json().get("status") == "failed":
                    raise RuntimeError(f"server failed to load: {ready.json().get('error')}")
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"server not ready in time:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def status(self) -> dict:
        return httpx.get(self.url + "/readyz", timeout=5).json()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("edge") / "cache").start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def openai_client(server: Server):
    import openai

    return openai.OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def parts():
    """The production embedder and hit judge, in-process (one load for every module that asks)."""
    from edge_ai.config import Settings
    from edge_ai.model_files import open_embedder, open_judge

    settings = Settings(models_dir="models")
    embedder = open_embedder(settings)
    yield embedder, open_judge(settings)
    embedder.close()


def kill_mid_traffic(srv: Server, ask, question, at_least: int, clients: int = 3) -> list[tuple[str, str]]:
    """Clients ask `srv` new questions until `at_least` answers are acknowledged, then SIGKILL it with
    requests in flight: the acknowledged (question, answer) pairs, the ones that must not be lost."""
    import threading

    acknowledged: list[tuple[str, str]] = []
    stop = threading.Event()

    def client() -> None:
        while not stop.is_set():
            q = question()
            try:
                source, text = ask(srv, q)
            except Exception:  # the server died under it: not acknowledged
                return
            if source == "local":
                acknowledged.append((q, text))

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < at_least and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.proc is not None
    srv.proc.kill()
    srv.proc.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged) >= at_least
    return acknowledged


class RedisServer:
    """A real redis-server on a free loopback port, without persistence (so a restart loses everything,
    as a Redis restarted without persistence does)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        import shutil

        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: apt-get install -y redis-server (.ci/run does)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.directory)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                return self
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The suite's Redis: the one .ci/run started (EDGE_AI_TEST_REDIS_URL), else one of its own. Tests keep
    to key prefixes of their own in it."""
    if os.environ.get("EDGE_AI_TEST_REDIS_URL"):
        yield os.environ["EDGE_AI_TEST_REDIS_URL"]
        return
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv.url
    srv.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to flush, restart or kill."""
    srv = RedisServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture(params=["disk", "redis"])
def store_at(request: pytest.FixtureRequest, tmp_path: Path):
    """Opens a store by name on either backend: the shared suite every backend must pass. Names are
    per test (a directory under tmp_path, a key prefix in Redis), so two opens of one name are two
    handles on one cache, as two processes or two replicas would hold."""
    from edge_ai.engines.store import DiskStore, Store

    opened: list[Store] = []
    prefix = f"t{os.getpid()}-{time.monotonic_ns()}"

    def make(name: str = "cache", ttl: float | None = None) -> Store:
        if request.param == "redis":
            from edge_ai.engines.redis_store import RedisStore

            store: Store = RedisStore(request.getfixturevalue("redis_url"), ttl, prefix=f"{prefix}-{name}")
        else:
            store = DiskStore(tmp_path / name, ttl)
        opened.append(store)
        return store

    make.backend = request.param  # type: ignore[attr-defined]
    yield make
    for store in opened:
        store.close()


class Scripted:
    """An engine task whose answer is a fixed text (for the answer policy's handling of an answer)."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def stream(self):
        from edge_ai.request import Final

        yield self.text
        yield Final(self.text, "stop", 10, 5)
