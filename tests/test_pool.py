"""A pool of inference servers on loopback (two more edge-ai processes as backends): least-loaded routing,
answers cached with the backend's name, a backend killed mid-stream, the in-process model last."""

from __future__ import annotations

import uuid

import httpx
import openai
import pytest

from tests.conftest import Server


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    d = tmp_path_factory.mktemp("pool")
    b1, b2 = Server(d / "b1").start(), Server(d / "b2").start()
    cfg = d / "front.toml"
    cfg.write_text(f"""
backend_health_interval = 0.5
breaker_failures = 1
breaker_cooldown = 60

[[backends]]
name = "b1"
base_url = "{b1.url}"

[[backends]]
name = "b2"
base_url = "{b2.url}"
""")
    front = Server(d / "front", "--config", str(cfg)).start()
    yield front, {"b1": b1, "b2": b2}
    for srv in (front, b1, b2):
        srv.stop()


def client(srv: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=srv.url + "/v1", api_key="k", max_retries=0, timeout=60)


def question() -> str:
    return f"Write a short story about a robot named {uuid.uuid4().hex[:5]} who learns to paint."


def test_backend_answers_are_served_and_cached_with_its_name(pool):
    front, _ = pool
    q = question()
    raw = client(front).chat.completions.with_raw_response.create(
        model="m", max_tokens=12, messages=[{"role": "user", "content": q}])
    assert raw.headers["x-edge-source"] == "local" and raw.headers["x-edge-backend"] in ("b1", "b2")
    answer = raw.parse().choices[0].message.content
    assert answer and raw.parse().usage.completion_tokens > 0
    again = client(front).chat.completions.with_raw_response.create(
        model="m", max_tokens=12, messages=[{"role": "user", "content": q}])
    assert again.headers["x-edge-source"] == "cache" and again.parse().choices[0].message.content == answer
    listed = httpx.get(front.url + "/admin/cache/entries", params={"q": q[-30:]}, timeout=10).json()["data"]
    assert [e["backend"] for e in listed] == [raw.headers["x-edge-backend"]]


def test_a_second_request_goes_to_the_less_loaded_backend(pool):
    front, _ = pool
    c = client(front)
    no_cache = {"x-edge-cache": "off"}
    with c.chat.completions.with_streaming_response.create(
            model="m", max_tokens=48, stream=True, extra_headers=no_cache,
            messages=[{"role": "user", "content": question()}]) as first:
        # the first is in flight on one backend (its first event is in): the next goes to the other
        with c.chat.completions.with_streaming_response.create(
                model="m", max_tokens=8, stream=True, extra_headers=no_cache,
                messages=[{"role": "user", "content": question()}]) as second:
            assert {first.headers["x-edge-backend"], second.headers["x-edge-backend"]} == {"b1", "b2"}
            list(second.iter_lines())
        list(first.iter_lines())


def test_a_backend_killed_mid_stream_the_answer_is_finished_in_process(pool):
    front, backends = pool
    c = client(front)
    with c.chat.completions.with_streaming_response.create(
            model="m", max_tokens=160, stream=True, extra_headers={"x-edge-cache": "off"},
            messages=[{"role": "user", "content": question()}]) as resp:
        victim = resp.headers["x-edge-backend"]
        chunks = resp.parse()
        text, finish = [], None
        for chunk in chunks:
            if chunk.choices and chunk.choices[0].delta.content:
                text.append(chunk.choices[0].delta.content)
                if len(text) == 3:
                    backends[victim].proc.kill()  # SIGKILL, mid-answer
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
    assert finish in ("stop", "length") and len(text) > 3  # one well-formed answer, longer than what b sent
    backends[victim].proc.wait()
    # the dead backend is left out: the other answers, and with both gone the in-process model does
    other = ({"b1", "b2"} - {victim}).pop()
    raw = c.chat.completions.with_raw_response.create(model="m", max_tokens=6, messages=[{"role": "user", "content": question()}])
    assert raw.headers["x-edge-backend"] == other
    backends[other].stop()
    raw = c.chat.completions.with_raw_response.create(model="m", max_tokens=6, messages=[{"role": "user", "content": question()}])
    assert raw.headers["x-edge-source"] == "local" and "x-edge-backend" not in raw.headers
    assert raw.parse().choices[0].message.content
    status = {b["name"]: b for b in httpx.get(front.url + "/readyz", timeout=5).json()["backends"]}
    assert status[victim]["state"] == "open" and status[victim]["broken"] == 1
