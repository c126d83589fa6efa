"""Gateway mode against a fake cloud that fails the way outages fail, driven by the official SDKs."""

from __future__ import annotations

import time
import uuid

import anthropic
import httpx
import openai
import pytest

from edge_ai.engines.upstream import Breaker
from edge_ai.fake_cloud import FakeCloud
from tests.conftest import Server

COOLDOWN = 5.0  # longer than a few local answers take on a loaded box, so an open breaker stays open while tested


@pytest.fixture(scope="module")
def cloud():
    c = FakeCloud().start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def gateway(cloud, tmp_path_factory):
    d = tmp_path_factory.mktemp("gw")
    cfg = d / "edge.toml"
    cfg.write_text(f"""
breaker_failures = 3
breaker_cooldown = {COOLDOWN}

[[upstreams]]
name = "claude"
dialect = "anthropic"
base_url = "{cloud.url}"
api_key = "sk-test"
first_byte_timeout = 1.0
connect_timeout = 1.0

[[upstreams]]
name = "gpt"
dialect = "openai"
base_url = "{cloud.url}"
first_byte_timeout = 1.0
""")
    srv = Server(d / "cache", "--config", str(cfg)).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def claude(gateway):
    return anthropic.Anthropic(base_url=gateway.url, api_key="client-key", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def gpt(gateway):
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=60)


@pytest.fixture()
def healthy(cloud, gateway, claude, gpt):
    """A healthy cloud and closed breakers at the start of each test (tests' failures add up otherwise)."""
    cloud.set("healthy")
    states = {u["name"]: u["state"] for u in gateway.status()["upstreams"]}
    if any(s != "closed" for s in states.values()):
        time.sleep(COOLDOWN + 0.1)  # past the cooldown: the next request of each dialect is a probe
    if states["claude"] != "closed":
        claude.messages.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "probe"}])
    if states["gpt"] != "closed":
        gpt.chat.completions.create(model="m", max_tokens=4, messages=[{"role": "user", "content": "probe"}])
    assert all(u["state"] == "closed" for u in gateway.status()["upstreams"])
    yield cloud
    cloud.set("healthy")


def q(text: str) -> str:
    return f"{text} {uuid.uuid4().hex[:6]}"


def wait_written(gateway, before: int) -> None:
    """Write-through runs after the answer went out; wait until it has landed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if gateway.status()["cache"]["entries"] > before:
            return
        time.sleep(0.05)
    raise AssertionError("the cloud answer was not written to the cache")


def ask_claude(claude, question: str, **kw):
    raw = claude.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=12, messages=[{"role": "user", "content": question}], **kw)
    return raw.headers, raw.parse()


def test_healthy_cloud_is_passed_through_and_written_to_the_cache(gateway, claude, healthy):
    question = q("What is a comet?")
    before = gateway.status()["cache"]["entries"]
    h1, m1 = ask_claude(claude, question)
    wait_written(gateway, before)
    assert h1["x-edge-source"] == "cloud" and h1["x-edge-upstream"] == "claude"
    assert m1.content[0].text == f"Cloud answer: {question}"
    healthy.set("status", code=500)
    h2, m2 = ask_claude(claude, question)
    assert h2["x-edge-source"] == "cache"
    assert "http 500" in h2["x-edge-fallback"]
    assert m2.content[0].text == m1.content[0].text  # the real cloud answer, served during the outage


@pytest.mark.parametrize(
    "mode,kw,reason",
    [
        ("status", {"code": 500}, "http 500"),
        ("status", {"code": 502}, "http 502"),
        ("status", {"code": 503}, "http 503"),
        ("status", {"code": 504}, "http 504"),
        ("status", {"code": 529}, "http 529 overloaded_error"),
        ("status", {"code": 429, "retry_after": 30}, "http 429"),
        ("reset", {}, "connection reset"),
        ("slow", {"delay": 2.5}, "first-byte timeout"),
        ("garbage", {}, "malformed body"),
    ],
)
def test_each_failure_is_answered_locally(claude, healthy, mode, kw, reason):
    healthy.set(mode, **kw)
    h, m = ask_claude(claude, q("Name a planet."))
    assert h["x-edge-source"] in ("local", "cache")
    assert reason in h["x-edge-fallback"]
    # an answer was made locally (the packaged base model may answer with whitespace: its text is not judged)
    assert m.content[0].type == "text" and m.content[0].text and m.usage.output_tokens > 0
    healthy.set("healthy")
    h, _ = ask_claude(claude, q("Name a star."))  # a success closes the breaker's count again
    assert h["x-edge-source"] == "cloud"


def test_short_429_is_retried_after_its_retry_after(claude, healthy):
    healthy.set("status", code=429, retry_after=0.2, times=1)
    before = healthy.stats.requests
    h, m = ask_claude(claude, q("Name a moon."))
    assert h["x-edge-source"] == "cloud"
    assert healthy.stats.requests - before == 2


def test_openai_dialect_failover(gateway, gpt, healthy):
    question = q("What is rain?")
    before = gateway.status()["cache"]["entries"]
    r1 = gpt.chat.completions.with_raw_response.create(model="gpt-4o", max_tokens=12, messages=[{"role": "user", "content": question}])
    assert r1.headers["x-edge-source"] == "cloud"
    wait_written(gateway, before)
    healthy.set("status", code=503)
    r2 = gpt.chat.completions.with_raw_response.create(model="gpt-4o", max_tokens=12, messages=[{"role": "user", "content": question}])
    assert r2.headers["x-edge-source"] == "cache"
    assert r2.parse().choices[0].message.content == f"Cloud answer: {question}"


def test_stream_failing_before_first_byte_is_answered_locally(claude, healthy):
    healthy.set("status", code=529)
    with claude.messages.with_streaming_response.create(
        model="claude-sonnet-4-5", max_tokens=12, stream=True, messages=[{"role": "user", "content": q("Hi there")}]
    ) as resp:
        assert resp.headers["x-edge-source"] in ("local", "cache")
        events = [e.type for e in resp.parse()]
    assert events[0] == "message_start" and events[-1] == "message_stop"


def sse_events(url: str, body: dict) -> tuple[dict, list[tuple[str, str]]]:
    out = []
    with httpx.stream("POST", url, json=body, timeout=60) as r:
        event = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                out.append((event, line[6:]))
        return dict(r.headers), out


def test_anthropic_stream_cut_midway_is_finished_locally(gateway, claude, healthy):
    question = q("Tell me about volcanoes.")
    healthy.set("cut", cut_after=5)  # message_start, block_start, ping, "Cloud", " answer:"
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=24, messages=[{"role": "user", "content": question}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text.startswith("Cloud answer:") and len(text) > len("Cloud answer:")
    assert final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")
    healthy.set("cut", cut_after=6)
    headers, events = sse_events(gateway.url + "/v1/messages", {"model": "m", "max_tokens": 24, "stream": True, "messages": [{"role": "user", "content": question}]})
    names = [e for e, _ in events]
    assert names.count("message_start") == 1 and names.count("message_stop") == 1 and names[-1] == "message_stop"
    assert names.count("content_block_start") == 1 and names.count("message_delta") == 1


def test_openai_stream_cut_midway_is_finished_locally(gpt, healthy):
    healthy.set("cut", cut_after=3)  # role chunk, "Cloud", " answer:"
    stream = gpt.chat.completions.create(model="gpt-4o", max_tokens=24, stream=True, messages=[{"role": "user", "content": q("Tell me about rivers.")}])
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("Cloud answer:") and len(text) > len("Cloud answer:")
    assert sum(1 for c in chunks if c.choices and c.choices[0].finish_reason) == 1


def test_garbage_stream_event_is_recovered(claude, healthy):
    healthy.set("garbage")
    with claude.messages.stream(model="m", max_tokens=12, messages=[{"role": "user", "content": q("Hello")}]) as s:
        text = "".join(s.text_stream)
        final = s.get_final_message()
    assert text and final.content[0].text == text and final.usage.output_tokens > 0


def test_healthy_stream_is_written_through(gateway, claude, healthy):
    question = q("What is snow?")
    before = gateway.status()["cache"]["entries"]
    with claude.messages.stream(model="claude-sonnet-4-5", max_tokens=12, messages=[{"role": "user", "content": question}]) as s:
        text = "".join(s.text_stream)
    assert text == f"Cloud answer: {question}"
    wait_written(gateway, before)
    healthy.set("reset")
    h, m = ask_claude(claude, question)
    assert h["x-edge-source"] == "cache" and m.content[0].text == text


def test_breaker_opens_skips_the_cloud_and_recovers(gateway, claude, healthy):
    healthy.set("status", code=529)
    for _ in range(3):
        ask_claude(claude, q("Ping"))
    status = {u["name"]: u for u in gateway.status()["upstreams"]}["claude"]
    assert status["state"] == "open" and "529" in status["last_error"]
    before = healthy.stats.requests
    h, _ = ask_claude(claude, q("Ping"))
    assert "breaker open" in h["x-edge-fallback"]
    assert healthy.stats.requests == before  # no request waited on the upstream
    healthy.set("healthy")
    time.sleep(COOLDOWN + 0.2)  # cooldown: the next request probes
    h, _ = ask_claude(claude, q("Ping"))
    assert h["x-edge-source"] == "cloud"
    assert {u["name"]: u for u in gateway.status()["upstreams"]}["claude"]["state"] == "closed"


def test_a_body_only_the_cloud_takes_is_forwarded_unchanged(gpt, healthy):
    """n > 1 is refused by the local path, but the cloud gets the client's request as it was."""
    r = gpt.chat.completions.with_raw_response.create(model="gpt-4o", max_tokens=8, n=2, messages=[{"role": "user", "content": q("Hi")}])
    assert r.headers["x-edge-source"] == "cloud"
    healthy.set("status", code=500)
    with pytest.raises(openai.BadRequestError):  # cloud down and not answerable locally: the local 400
        gpt.chat.completions.create(model="gpt-4o", max_tokens=8, n=2, messages=[{"role": "user", "content": q("Hi")}])


def test_connection_refused_falls_back(tmp_path):
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # closed when the block ends: nothing listens there
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[[upstreams]]\nname = "down"\ndialect = "anthropic"\nbase_url = "http://127.0.0.1:{dead}"\n')
    srv = Server(tmp_path / "cache", "--config", str(cfg)).start()
    try:
        client = anthropic.Anthropic(base_url=srv.url, api_key="k", max_retries=0, timeout=60)
        raw = client.messages.with_raw_response.create(model="m", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
        assert raw.headers["x-edge-source"] == "local"
        assert "connection refused" in raw.headers["x-edge-fallback"]
    finally:
        srv.stop()


def test_the_breaker_records_each_transition_when_it_happens():
    """The drill and operators read when a breaker opened and closed from these records, not from a poll."""
    b = Breaker(failures=2, cooldown=0.0)
    t0 = time.time()
    b.failure("status 529")
    assert b.status()["transitions"] == []  # one failure is below the threshold
    b.failure("status 529")
    b.failure("status 529")  # already open: no second record
    assert [t["state"] for t in b.status()["transitions"]] == ["open"]
    assert b.allow()  # cooldown 0: half-open, this request probes
    assert not b.allow()  # and only this one
    b.success()
    states = [t["state"] for t in b.status()["transitions"]]
    assert states == ["open", "half_open", "closed"]
    ats = [t["at"] for t in b.status()["transitions"]]
    assert ats == sorted(ats) and ats[0] >= t0 - 0.01


def test_responses_go_to_the_cloud_first_and_its_answer_serves_the_outage(gateway, gpt, healthy):
    """The Responses API through gateway mode: an OpenAI upstream answers it at /v1/responses, the answer
    is written through, and during an outage the same request is answered from the cache."""
    question = q("What is a glacier?")
    before = gateway.status()["cache"]["entries"]
    r1 = gpt.responses.with_raw_response.create(model="gpt-5", input=question, max_output_tokens=16)
    assert r1.headers["x-edge-source"] == "cloud" and r1.parse().output_text == f"Cloud answer: {question}"
    wait_written(gateway, before)
    healthy.set("status", code=503)
    r2 = gpt.responses.with_raw_response.create(model="gpt-5", input=question, max_output_tokens=16)
    assert r2.headers["x-edge-source"] == "cache" and "http 503" in r2.headers["x-edge-fallback"]
    assert r2.parse().output_text == f"Cloud answer: {question}"


def test_responses_stream_cut_midway_is_finished_locally(gpt, healthy):
    healthy.set("cut", cut_after=5)  # created, item added, part added, "Cloud", " answer:"
    events = list(gpt.responses.create(model="gpt-5", input=q("Tell me about lakes."), max_output_tokens=24, stream=True))
    kinds = [e.type for e in events]
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert kinds.count("response.created") == 1 and kinds[-1] == "response.completed" and kinds.count("response.completed") == 1
    assert text.startswith("Cloud answer:") and len(text) > len("Cloud answer:")
    done = next(e for e in events if e.type == "response.output_text.done")
    assert done.text == text and events[-1].response.output[0].content[0].text == text
    assert [e.sequence_number for e in events] == list(range(len(events)))
