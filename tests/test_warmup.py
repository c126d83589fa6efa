"""`edge-ai warm` and `edge-ai cache …` as an operator runs them, then live traffic hitting what they wrote."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest

from edge_ai.fake_cloud import FakeCloud
from tests.conftest import ROOT, Server, ticket

ANSWER = "Recorded: the office opens at 9."


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "EDGE_AI_N_SLOTS": "4", "EDGE_AI_N_CTX_SLOT": "1024"})


def write_inputs(path) -> None:
    lines = [
        json.dumps("How do I reset my password?"),
        json.dumps("How can I reset my password?"),  # near-duplicate: dropped
        json.dumps("How do I reset my password?"),  # exact duplicate: dropped
        "What is the capital of France?",  # plain text line
        json.dumps({"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is a CPU?"}], "max_tokens": 8}),
        json.dumps({"model": "claude-sonnet-4-5", "system": "Be brief.", "max_tokens": 8, "messages": [{"role": "user", "content": "What is RAM?"}]}),
        json.dumps({"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "When does the office open?"}]},
                    "response": {"type": "message", "role": "assistant", "content": [{"type": "text", "text": ANSWER}],
                                 "stop_reason": "end_turn", "usage": {"input_tokens": 5, "output_tokens": 9}}}),
        json.dumps({"foo": "bar"}),  # bad: line 8
        json.dumps({"request": {"messages": [{"role": "user", "content": "x"}]}, "response": {"nonsense": True}}),  # bad: line 9
        # one template, two tickets: not near-duplicates, though the template makes their embeddings so
        json.dumps({"messages": [{"role": "user", "content": ticket("I was charged twice this month.")}], "max_tokens": 4}),
        json.dumps({"messages": [{"role": "user", "content": ticket("The dashboard is down.")}], "max_tokens": 4}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def warmed(tmp_path_factory):
    d = tmp_path_factory.mktemp("warm")
    write_inputs(d / "in.jsonl")
    first = cli("warm", str(d / "in.jsonl"), "--cache-dir", str(d / "cache"), "--model", "gpt-4o", "--report", str(d / "r1.json"))
    second = cli("warm", str(d / "in.jsonl"), "--cache-dir", str(d / "cache"), "--model", "gpt-4o", "--report", str(d / "r2.json"))
    return d, first, second


def test_warm_summary_and_report(warmed):
    d, first, _ = warmed
    assert first.returncode == 1, first.stdout + first.stderr  # bad lines make the run non-zero
    r = json.loads((d / "r1.json").read_text())
    assert r["lines"] == 11
    assert r["imported"] == 1
    assert r["answered"] == {"local": 6}
    assert r["duplicates_skipped"] == 2
    assert r["failed"] == 2
    assert sorted(f["line"] for f in r["failures"]) == ["in.jsonl:8", "in.jsonl:9"]
    assert "imported answers: 1" in first.stdout


def test_warm_rerun_skips_what_is_cached(warmed):
    d, _, second = warmed
    r = json.loads((d / "r2.json").read_text())
    assert r["answered"] == {} and r["already_cached"] == 6 and r["imported"] == 1


def test_live_requests_hit_what_warmup_wrote(warmed):
    d, _, _ = warmed
    srv = Server(d / "cache").start()
    try:
        def ask(body: dict, path: str = "/v1/chat/completions") -> httpx.Response:
            return httpx.post(srv.url + path, json=body, timeout=60)

        r = ask({"model": "gpt-4o", "messages": [{"role": "user", "content": "How can I reset my password?"}]})
        assert r.headers["x-edge-source"] == "cache"
        r = ask({"model": "gpt-4o", "messages": [{"role": "user", "content": "When does the office open?"}]})
        assert r.headers["x-edge-source"] == "cache" and r.json()["choices"][0]["message"]["content"] == ANSWER
        r = ask({"model": "claude-sonnet-4-5", "system": "Be brief.", "max_tokens": 8, "messages": [{"role": "user", "content": "What is RAM?"}]}, "/v1/messages")
        assert r.headers["x-edge-source"] == "cache"
        assert srv.status()["cache"]["entries"] == 7
    finally:
        srv.stop()


def test_warm_into_a_running_servers_cache(tmp_path):
    srv = Server(tmp_path / "cache").start()
    try:
        (tmp_path / "in.jsonl").write_text(json.dumps({"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": "Is the shop open on Sunday?"}]},
                                                        "response": {"choices": [{"message": {"role": "assistant", "content": "Closed on Sundays."}, "finish_reason": "stop"}]}}) + "\n")
        done = cli("warm", str(tmp_path / "in.jsonl"), "--cache-dir", str(tmp_path / "cache"))
        assert done.returncode == 0, done.stderr
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "Is the shop open on Sundays?"}]}
        for _ in range(20):  # the server indexes entries other processes wrote within about a second
            r = httpx.post(srv.url + "/v1/chat/completions", json={**body, "max_tokens": 4}, headers={"x-edge-cache": "no-write"}, timeout=60)
            if r.headers["x-edge-source"] == "cache":
                break
            __import__("time").sleep(0.3)
        assert r.headers["x-edge-source"] == "cache" and r.json()["choices"][0]["message"]["content"] == "Closed on Sundays."
    finally:
        srv.stop()


def test_warm_through_the_cloud(tmp_path):
    cloud = FakeCloud().start()
    try:
        cfg = tmp_path / "edge.toml"
        cfg.write_text(f'cache_dir = "{tmp_path / "cache"}"\n[[upstreams]]\nname = "gpt"\ndialect = "openai"\nbase_url = "{cloud.url}"\n')
        (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(q) for q in ["What is a GPU?", "What is an SSD?"]) + "\n")
        cloud.set("status", code=429, retry_after=0.1, times=1)  # the first call is told to wait, then succeeds
        done = cli("warm", str(tmp_path / "in.jsonl"), "--config", str(cfg), "--report", str(tmp_path / "r.json"))
        assert done.returncode == 0, done.stdout + done.stderr
        assert json.loads((tmp_path / "r.json").read_text())["answered"] == {"cloud": 2}
    finally:
        cloud.stop()


def test_cache_export_import_round_trip(warmed, tmp_path):
    d, _, _ = warmed
    assert cli("cache", "export", str(tmp_path / "dump.jsonl"), "--cache-dir", str(d / "cache")).returncode == 0
    lines = (tmp_path / "dump.jsonl").read_text().splitlines()
    assert len(lines) == 7
    with open(tmp_path / "dump.jsonl", "a") as fh:
        fh.write("not json\n")
    imp = cli("cache", "import", str(tmp_path / "dump.jsonl"), "--cache-dir", str(tmp_path / "copy"))
    assert imp.returncode == 1 and "imported 7 entries, 1 bad lines" in imp.stdout and ":8:" in imp.stderr
    assert cli("cache", "export", str(tmp_path / "again.jsonl"), "--cache-dir", str(tmp_path / "copy")).returncode == 0
    key = lambda l: json.loads(l)["id"]  # noqa: E731
    assert sorted(lines, key=key) == sorted((tmp_path / "again.jsonl").read_text().splitlines(), key=key)  # lossless
    stats = cli("cache", "stats", "--cache-dir", str(tmp_path / "copy")).stdout
    assert "entries:   7" in stats and "import=1" in stats and "local=6" in stats
    purge = cli("cache", "purge", "--model", "claude-sonnet-4-5", "--cache-dir", str(tmp_path / "copy"))
    assert "purged 1 entries" in purge.stdout
    assert "entries:   6" in cli("cache", "stats", "--cache-dir", str(tmp_path / "copy")).stdout


def test_near_duplicates_are_found_among_more_prompts_than_the_embedders_queue_holds(parts, tmp_path):
    from edge_ai.cache import SemanticCache
    from edge_ai.warmup import Warmer, WarmReport, read_inputs

    embedder, judge = parts
    prompts = [f"What is item {i} made of?" for i in range(20)] + ["What is item 3 made of ?", "what is item 3 made of?"]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(p) for p in prompts) + "\n")
    report = WarmReport()
    items = read_inputs([tmp_path / "in.jsonl"], "gpt-4o", report)
    cache = SemanticCache.open(tmp_path / "cache", embedder, judge)
    embedder.max_queue = 8  # 22 prompts are embedded in parts the queue admits
    try:
        kept = asyncio.run(Warmer(cache, None, [])._dedupe(items, report, lambda n: None))
    finally:
        embedder.max_queue = 1024
        cache.close()
    assert [i.req.query for i in kept] == prompts[:20] and report.duplicates == 2  # numbers tell items apart


def test_a_broken_json_line_is_a_failure_with_its_line_number_never_a_prompt(tmp_path):
    from edge_ai.warmup import WarmReport, read_inputs

    f = tmp_path / "log.jsonl"
    f.write_text('{not json\n"What is a comet?"\n[1, 2\nplain text prompt\n')
    report = WarmReport()
    items = read_inputs([f], "gpt-4o", report)
    assert [i.req.query for i in items] == ["What is a comet?", "plain text prompt"]
    assert [x["line"] for x in report.failures] == ["log.jsonl:1", "log.jsonl:3"]
    assert all("not valid JSON" in x["reason"] for x in report.failures)


def test_warm_up_items_take_the_named_tenant(tmp_path):
    from edge_ai.warmup import WarmReport, read_inputs

    f = tmp_path / "p.jsonl"
    f.write_text('"What is a comet?"\n')
    plain, scoped = (read_inputs([f], "m", WarmReport(), tenant=t)[0].req for t in ("", "alpha"))
    assert scoped.tenant == "alpha" and plain.tenant == ""
    assert scoped.scope_key() != plain.scope_key()
