"""Fallback-target mode: edge-ai (no upstream) as the fallback of an external gateway (LiteLLM Router)."""

from __future__ import annotations

import os

import httpx
import pytest

from edge_ai.fake_cloud import FakeCloud

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch of a price list at import
litellm = pytest.importorskip("litellm")


@pytest.fixture(scope="module")
def failing_cloud():
    c = FakeCloud().start()
    yield c
    c.stop()


def router(primary: dict, fallback: dict):
    return litellm.Router(
        model_list=[{"model_name": "primary", "litellm_params": primary}, {"model_name": "edge", "litellm_params": fallback}],
        fallbacks=[{"primary": ["edge"]}],
        num_retries=0,
    )


@pytest.mark.parametrize("code", [529, 500])
def test_litellm_router_falls_back_to_edge_ai_anthropic(server, failing_cloud, code):
    failing_cloud.set("status", code=code)
    r = router(
        {"model": "anthropic/claude-sonnet-4-5", "api_base": failing_cloud.url, "api_key": "sk-cloud"},
        {"model": "anthropic/claude-sonnet-4-5", "api_base": server.url, "api_key": "unused"},
    )
    before = failing_cloud.stats.requests
    resp = r.completion(model="primary", messages=[{"role": "user", "content": "Where is the Eiffel Tower?"}], max_tokens=12)
    assert failing_cloud.stats.requests > before  # the primary really was tried and failed
    assert resp.choices[0].message.content.strip()


def test_litellm_router_falls_back_to_edge_ai_openai(server, failing_cloud):
    failing_cloud.set("status", code=503)
    r = router(
        {"model": "openai/gpt-4o", "api_base": failing_cloud.url + "/v1", "api_key": "sk-cloud"},
        {"model": "openai/gpt-4o", "api_base": server.url + "/v1", "api_key": "unused"},
    )
    resp = r.completion(model="primary", messages=[{"role": "user", "content": "Name a river."}], max_tokens=12)
    assert resp.choices[0].message.content.strip()


def test_litellm_streaming_fallback(server, failing_cloud):
    failing_cloud.set("status", code=529)
    r = router(
        {"model": "anthropic/claude-sonnet-4-5", "api_base": failing_cloud.url, "api_key": "sk-cloud"},
        {"model": "anthropic/claude-sonnet-4-5", "api_base": server.url, "api_key": "unused"},
    )
    chunks = list(r.completion(model="primary", messages=[{"role": "user", "content": "Say hi."}], max_tokens=8, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks).strip()


@pytest.mark.parametrize("path,body", [
    ("/v1/messages", {"model": "some-future-model", "max_tokens": 8, "messages": [{"role": "user", "content": "Anthropic-style question never seen before"}]}),
    ("/v1/chat/completions", {"model": "some-future-model", "max_tokens": 8, "messages": [{"role": "user", "content": "OpenAI-style question never seen before"}]}),
])
def test_a_cache_miss_never_looks_like_a_broken_deployment(server, path, body):
    """No key, unknown model, nothing cached: still a 200 answer, never 401/404."""
    r = httpx.post(server.url + path, json=body, headers={"x-edge-cache": "no-read"}, timeout=60)
    assert r.status_code == 200, r.text
    assert r.headers["x-edge-source"] == "local"
