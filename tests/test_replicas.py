"""Two real edge-ai replicas on one real Redis: what one learns the other serves; restarts, SIGKILL,
FLUSHALL and a Redis restart lose nothing acknowledged and serve nothing gone; tenants stay apart."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ROOT, RedisServer, Server, kill_mid_traffic

KEY_A, KEY_B, ADMIN = "edge-key-tenant-a", "edge-key-tenant-b", "edge-key-admin"


@pytest.fixture(scope="module")
def redis_srv(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("replica-redis")).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def site(redis_srv, tmp_path_factory):
    d = tmp_path_factory.mktemp("replicas")
    cfg = d / "edge.toml"
    cfg.write_text(f"""
cache_backend = "redis"
redis_url = "{redis_srv.url}"
redis_prefix = "site"

[[api_keys]]
key = "{KEY_A}"
tenant = "tenant-a"

[[api_keys]]
key = "{KEY_B}"
tenant = "tenant-b"

[[api_keys]]
key = "{ADMIN}"
tenant = "ops"
admin = true
""")
    cfg.chmod(0o600)
    a = Server(d / "a", "--config", str(cfg)).start()
    b = Server(d / "b", "--config", str(cfg)).start()
    yield a, b, cfg
    a.stop()
    b.stop()


def ask(srv: Server, question: str, key: str = KEY_A) -> tuple[str, str]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=6, messages=[{"role": "user", "content": question}])
    return raw.headers["x-edge-source"], raw.parse().choices[0].message.content


def until_cached(srv: Server, question: str, key: str = KEY_A, timeout: float = 30.0) -> tuple[float, str]:
    """Seconds until `srv` serves `question` from the cache, and the answer (a try that misses is answered
    by the local model meanwhile)."""
    t0 = time.monotonic()
    while True:
        source, text = ask(srv, question, key)
        if source == "cache":
            return time.monotonic() - t0, text
        assert time.monotonic() - t0 < timeout, f"{srv.url} never served it from the cache"
        time.sleep(0.2)


def store_status(srv: Server) -> dict:
    return httpx.get(srv.url + "/readyz", timeout=5).json()["cache"]["store"]


def question() -> str:
    return f"Name one use of a {uuid.uuid4().hex[:6]} field in a database row?"


def test_written_through_one_replica_served_by_the_other_and_tenants_stay_apart(site):
    a, b, _ = site
    q = question()
    source, answer = ask(a, q)
    assert source == "local"
    _, served = until_cached(b, q)
    assert served == answer
    assert ask(b, q, KEY_B)[0] == "local"  # another tenant's cache, on either replica
    assert ask(a, q, KEY_B)[0] == "cache"  # ...which it has now filled for itself, through B
    # an admin purge through B removes it for A as well
    gone = httpx.post(b.url + "/admin/cache/purge", json={"tenant": "tenant-a"},
                      headers={"authorization": f"Bearer {ADMIN}"}, timeout=10).json()
    assert gone["deleted"] >= 1
    assert ask(a, q)[0] == "local"


def test_a_restarted_replica_catches_up(site):
    a, b, _ = site
    b.stop()
    learned = [question() for _ in range(3)]
    answers = [ask(a, q)[1] for q in learned]
    b.start()
    assert [ask(b, q) for q in learned] == [("cache", t) for t in answers]


def test_sigkill_mid_traffic_loses_no_acknowledged_entry(site):
    a, b, _ = site
    acknowledged = kill_mid_traffic(a, ask, question, at_least=6)  # SIGKILL, with requests in flight
    assert [ask(b, q) for q, _ in acknowledged] == [("cache", text) for _, text in acknowledged]
    a.start()


def test_flushall_and_a_redis_restart_serve_nothing_that_is_gone(site, redis_srv):
    import redis

    a, b, _ = site
    for lose in ("flushall", "restart"):
        q1, q2 = question(), question()
        for q in (q1, q2):
            ask(a, q)
            until_cached(b, q)
        if lose == "flushall":
            redis.Redis.from_url(redis_srv.url).flushall()
        else:
            redis_srv.restart()  # no persistence: everything gone
        # (each answer is stored anew: a second question for the second replica)
        assert ask(b, q1)[0] == "local" and ask(a, q2)[0] == "local"
        for srv in (a, b):  # both resync and follow again
            deadline = time.monotonic() + 30
            while not store_status(srv)["available"]:
                assert time.monotonic() < deadline
                time.sleep(0.2)
        q2 = question()
        ask(a, q2)
        until_cached(b, q2)


def test_warm_and_cache_commands_work_on_redis(site, tmp_path):
    a, b, cfg = site
    prompts = [question(), question()]
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(f'"{p}"\n' for p in prompts))

    def edge_ai(*args: str) -> str:
        out = subprocess.run([sys.executable, "-m", "edge_ai", *args, "--config", str(cfg)], cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    edge_ai("warm", str(file), "--model", "gpt-4o-mini", "--max-tokens", "6", "--tenant", "tenant-a")
    for p in prompts:
        until_cached(b, p)
    stats = edge_ai("cache", "stats")
    assert "redis://127.0.0.1" in stats and int(stats.split("entries:")[1].split()[0]) >= 2
    exported = tmp_path / "dump.jsonl"
    edge_ai("cache", "export", str(exported))
    assert all(p in exported.read_text() for p in prompts)
    edge_ai("cache", "purge", "--all")
    assert [ask(b, p)[0] for p in prompts] == ["local", "local"]
    edge_ai("cache", "import", str(exported))
    assert [ask(a, p)[0] for p in prompts] == ["cache", "cache"]
