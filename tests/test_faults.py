"""Fault drills: SIGKILL while answers are being stored and during a warm-up, a missing or corrupt model
file, a read-only or full cache directory. Every acknowledged entry is there after a restart, nothing
half-written is served, and a store that cannot be written leaves answers flowing with a loud metric."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from edge_ai.engines.store import DiskStore
from tests.conftest import ROOT, Server, kill_mid_traffic


def ask(srv: Server, question: str, max_tokens: int = 6) -> tuple[str, str]:
    client = openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0, timeout=60)
    raw = client.chat.completions.with_raw_response.create(
        model="m", max_tokens=max_tokens, messages=[{"role": "user", "content": question}])
    return raw.headers["x-edge-source"], raw.parse().choices[0].message.content


def question() -> str:
    return f"What is a {uuid.uuid4().hex[:6]} in plain words?"


def whole(d: Path) -> list:
    """Every stored entry, each checked to be complete: what a restarted server would index."""
    store = DiskStore(d)
    entries = list(store)
    for e in entries:
        assert e.answer and e.query and e.vec().shape == (384,) and e.scope_key
    store.close()
    return entries


def test_sigkill_while_storing_answers_loses_nothing_acknowledged(tmp_path):
    srv = Server(tmp_path / "cache").start()
    acknowledged = kill_mid_traffic(srv, ask, question, at_least=8, clients=4)  # SIGKILL, writes in flight
    assert len(whole(tmp_path / "cache")) >= len(acknowledged)
    srv.start()
    assert [ask(srv, q) for q, _ in acknowledged] == [("cache", text) for _, text in acknowledged]
    srv.stop()


def test_sigkill_during_warm_up_then_a_rerun_finishes_the_rest(tmp_path):
    prompts = [question() for _ in range(24)]
    file = tmp_path / "prompts.jsonl"
    file.write_text("".join(json.dumps(p) + "\n" for p in prompts))
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "edge_ai", "warm", str(file), "--cache-dir", str(cache), "--max-tokens", "6",
           "--concurrency", "2"]
    env = {"EDGE_AI_N_SLOTS": "2", "EDGE_AI_N_CTX_SLOT": "1024"}
    import os

    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if cache.exists() and len(DiskStore(cache)) >= 3:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait()
    first = whole(cache)
    assert 3 <= len(first) < len(prompts)  # killed part way, with whole entries only
    report = tmp_path / "report.json"
    out = subprocess.run(cmd + ["--report", str(report)], cwd=ROOT, env={**os.environ, **env}, capture_output=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    summary = json.loads(report.read_text())
    assert summary["already_cached"] == len(first) and summary["failed"] == 0
    assert sorted(e.query for e in whole(cache)) == sorted(prompts)


def test_missing_or_corrupt_model_file_is_a_clear_message_at_start(tmp_path):
    corrupt = tmp_path / "broken.gguf"
    corrupt.write_bytes(b"GGUF" + b"\x00" * 1024)
    for model, says in ((tmp_path / "missing.gguf", "missing.gguf"), (corrupt, "broken.gguf")):
        srv = Server(tmp_path / f"cache-{model.stem}", "--model", str(model))
        with pytest.raises(RuntimeError):
            srv.start()  # never ready
        status = httpx.get(srv.url + "/readyz", timeout=5)
        assert status.status_code == 503 and status.json()["status"] == "failed"
        assert says in status.json()["error"]
        r = httpx.post(srv.url + "/v1/chat/completions", json={"model": "m", "messages": [{"role": "user", "content": "hi"}]}, timeout=10)
        assert r.status_code == 503 and says in r.json()["error"]["message"]
        srv.stop()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a disk that fills, or that is mounted read-only."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    got = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if got.returncode != 0:
        pytest.skip(f"needs to mount a small tmpfs (root): {got.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_read_only_cache_directory_is_a_clear_message_at_start(small_disk, tmp_path):
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    srv = Server(small_disk / "cache")
    srv.log = tmp_path / "server.log"
    with pytest.raises(RuntimeError):
        srv.start()
    status = httpx.get(srv.url + "/readyz", timeout=5).json()
    assert status["status"] == "failed" and "Read-only file system" in status["error"] and str(small_disk) in status["error"]
    srv.stop()


def test_a_full_cache_directory_keeps_answers_flowing_and_says_so(small_disk, tmp_path):
    srv = Server(small_disk / "cache")
    srv.log = tmp_path / "server.log"  # the log is not on the small disk
    srv.start()
    kept = question()
    first = ask(srv, kept)
    assert ask(srv, kept) == ("cache", first[1])
    with open(small_disk / "filler", "wb") as f:  # fill the disk
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    lost = [question() for _ in range(3)]
    for q in lost:
        assert ask(srv, q)[0] == "local"  # answered, though it cannot be stored
    assert ask(srv, kept) == ("cache", first[1])  # reads go on
    metrics = httpx.get(srv.url + "/metrics", timeout=10).text
    failures = [line for line in metrics.splitlines() if line.startswith("edge_ai_cache_write_failures_total")]
    assert failures and float(failures[0].split()[-1]) >= 1
    srv.stop()
    (small_disk / "filler").unlink()
    srv.start()  # the store opens whole after the failed writes
    assert ask(srv, kept) == ("cache", first[1])
    assert [e.query for e in whole(small_disk / "cache")] == [kept]
    srv.stop()
