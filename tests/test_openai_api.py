"""The OpenAI dialect end to end, through the official `openai` SDK against the real server."""

from __future__ import annotations

import uuid

import httpx
import numpy as np
import pytest


def unique(text: str) -> str:
    """Tests share one cache; a unique tag keeps each test's scope its own."""
    return f"{text} [{uuid.uuid4().hex[:8]}]"


def test_health_and_ready(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    status = server.status()
    assert status["status"] == "ready"
    assert "cache" in status and "entries" in status["cache"]


def test_models_lists_the_default_model(openai_client):
    ids = [m.id for m in openai_client.models.list().data]
    assert "SmolLM2-135M-Instruct.Q4_1" in ids


def test_chat_completion_answers_from_the_local_model(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="gpt-4o",
        messages=[{"role": "system", "content": unique("Be brief.")}, {"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    resp = raw.parse()
    assert raw.headers["x-edge-source"] == "local"
    assert resp.model == "gpt-4o"  # the client's own name is echoed back
    text = resp.choices[0].message.content
    assert text.strip(), "a chat answer must never come back empty"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens > 10  # real tokenizer count of the templated prompt
    assert 0 < resp.usage.completion_tokens <= 24
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_chat_streaming_matches_non_streaming(openai_client):
    msgs = [{"role": "system", "content": unique("Answer in one sentence.")}, {"role": "user", "content": "Name a color of the sky."}]
    kwargs = dict(model="claude-sonnet-4-5", messages=msgs, max_tokens=20, temperature=0, extra_headers={"x-edge-cache": "off"})
    openai_client.chat.completions.create(**kwargs)  # leaves the prompt in a slot: the next two reuse it alike
    full = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    stream = openai_client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finishes) == 1
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_content_part_arrays_are_accepted(openai_client):
    resp = openai_client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": [{"type": "text", "text": unique("Say hello.")}]}],
        max_tokens=8,
        temperature=0,
    )
    assert resp.choices[0].message.content.strip()


def test_stop_sequences_cut_the_answer(openai_client):
    msgs = [{"role": "user", "content": unique("Count from 1 to 10, separated by commas.")}]
    # the first request leaves its prompt in a slot; the next two both reuse it, so both compute the last
    # prompt token the same way (a cold prefill and a reused prefix may differ in the last bits)
    openai_client.chat.completions.create(model="m", messages=msgs, max_tokens=40, temperature=0)
    base = openai_client.chat.completions.create(model="m", messages=msgs, max_tokens=40, temperature=0, extra_headers={"x-edge-cache": "no-read"})
    text = base.choices[0].message.content
    stop = text[len(text) // 2 : len(text) // 2 + 3]  # a string the answer is known to contain
    cut = openai_client.chat.completions.create(
        model="m", messages=msgs, max_tokens=40, temperature=0, stop=[stop], extra_headers={"x-edge-cache": "no-read"}
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].message.content == text[: text.index(stop)]


def test_seeded_sampling_is_reproducible(openai_client):
    kwargs = dict(
        model="m",
        messages=[{"role": "user", "content": unique("Write a short poem about rain.")}],
        max_tokens=16,
        temperature=0.9,
        seed=1234,
        extra_headers={"x-edge-cache": "off"},
    )
    a = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    b = openai_client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_text_completion(openai_client):
    raw = openai_client.completions.with_raw_response.create(
        model="gpt-3.5-turbo-instruct", prompt=unique("The first month of the year is"), max_tokens=6, temperature=0
    )
    resp = raw.parse()
    assert raw.headers["x-edge-source"] == "local"
    assert resp.choices[0].text
    assert resp.usage.completion_tokens > 0


def test_text_completion_streaming(openai_client):
    stream = openai_client.completions.create(model="m", prompt=unique("One, two,"), max_tokens=6, temperature=0, stream=True)
    parts = [c.choices[0].text for c in stream if c.choices]
    assert "".join(parts)


def test_embeddings_single_and_batch(openai_client):
    one = openai_client.embeddings.create(model="text-embedding-3-small", input="hello world")
    assert len(one.data) == 1 and len(one.data[0].embedding) == 384
    many = openai_client.embeddings.create(model="x", input=["hello world", "a cat sat on the mat", "hello world"])
    vecs = np.array([d.embedding for d in many.data])
    assert [d.index for d in many.data] == [0, 1, 2]
    assert np.allclose(vecs[0], vecs[2], atol=1e-5)
    assert np.allclose(vecs[0], one.data[0].embedding, atol=1e-5)  # batching does not change a vector
    assert abs(np.linalg.norm(vecs[1]) - 1) < 1e-3
    assert many.usage.prompt_tokens > 6


def test_embeddings_base64(openai_client):
    # the SDK asks for base64 by default and decodes it; ask explicitly for float to compare
    b64 = openai_client.embeddings.create(model="x", input="hello world")
    flt = openai_client.embeddings.create(model="x", input="hello world", encoding_format="float")
    assert np.allclose(b64.data[0].embedding, flt.data[0].embedding, atol=1e-6)


@pytest.mark.parametrize("n_clients", [6])
def test_concurrent_requests_all_answered(openai_client, n_clients):
    from concurrent.futures import ThreadPoolExecutor

    def ask(i: int) -> str:
        r = openai_client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": unique(f"Say the number {i}.")}], max_tokens=8, temperature=0
        )
        return r.choices[0].message.content

    with ThreadPoolExecutor(n_clients) as pool:
        answers = list(pool.map(ask, range(n_clients)))
    assert all(a.strip() for a in answers)


def test_concurrent_embeddings_share_batches_and_all_succeed(openai_client):
    """Many single-sentence callers at once: all answered (the tokenizer is used by one thread only)."""
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"sentence number {i} about the weather" for i in range(48)]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda t: openai_client.embeddings.create(model="x", input=t), texts))
    assert all(len(r.data[0].embedding) == 384 and r.usage.prompt_tokens > 3 for r in results)
