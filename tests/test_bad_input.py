"""Bad input gets a 4xx in the OpenAI error envelope, never a 500, a hang or a cache write."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}


def post(server, path: str, body: bytes | dict, headers: dict | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(server.url + path, content=content, headers={"content-type": "application/json", **(headers or {})}, timeout=60)


def assert_envelope(resp: httpx.Response, status: int, param: str | None = None) -> dict:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param
    return err


CASES = [
    ("invalid JSON", b'{"model": "m", "messages": [', 400, None),
    ("not an object", b"[1, 2]", 400, None),
    ("missing messages", {"model": "m"}, 400, "messages"),
    ("missing model", {"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
    ("empty messages", {**GOOD, "messages": []}, 400, "messages"),
    ("mistyped temperature", {**GOOD, "temperature": "hot"}, 400, "temperature"),
    ("temperature out of range", {**GOOD, "temperature": 7}, 400, "temperature"),
    ("mistyped max_tokens", {**GOOD, "max_tokens": "many"}, 400, "max_tokens"),
    ("zero max_tokens", {**GOOD, "max_tokens": 0}, 400, "max_tokens"),
    ("unknown role", {**GOOD, "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ("missing content", {**GOOD, "messages": [{"role": "user"}]}, 400, "messages.0.content"),
    ("empty user message", {**GOOD, "messages": [{"role": "user", "content": "  "}]}, 400, "messages"),
    ("assistant last", {**GOOD, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, 400, "messages"),
    ("image part", {**GOOD, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages.0.content"),
    ("n > 1", {**GOOD, "n": 2}, 400, "n"),
    ("logprobs", {**GOOD, "logprobs": True}, 400, "logprobs"),
    ("tool choice naming no tool", {**GOOD, "tools": [{"type": "function", "function": {"name": "f"}}],
                                    "tool_choice": {"type": "function", "function": {"name": "g"}}}, 400, "tool_choice"),
    ("nameless tool", {**GOOD, "tools": [{"type": "function", "function": {}}], "tool_choice": "required"}, 400, "tools.0"),
    ("unknown response format", {**GOOD, "response_format": {"type": "yaml"}}, 400, "response_format"),
    ("json_schema without a schema object", {**GOOD, "response_format": {"type": "json_schema", "json_schema": "x"}}, 400, "response_format"),
    ("max_tokens beyond context", {**GOOD, "max_tokens": 100000}, 400, "max_tokens"),
]


@pytest.mark.parametrize("name,body,status,param", CASES, ids=[c[0] for c in CASES])
def test_bad_chat_request(server, name, body, status, param):
    before = server.status()["cache"]["entries"]
    err = assert_envelope(post(server, "/v1/chat/completions", body), status, param)
    if name == "max_tokens beyond context":
        assert err["code"] == "context_length_exceeded"
    assert server.status()["cache"]["entries"] == before  # nothing was written


def test_prompt_beyond_context_is_cut_to_fit_not_refused(server):
    long = "word " * 3000  # the test server's slots hold 1024 tokens
    r = post(server, "/v1/chat/completions", {**GOOD, "messages": [{"role": "user", "content": long}]}, {"x-edge-cache": "off"})
    assert r.status_code == 200 and int(r.headers["x-edge-truncated"]) > 1500


def test_oversized_body(server):
    huge = {**GOOD, "messages": [{"role": "user", "content": "x" * (5 * 1024 * 1024)}]}
    assert_envelope(post(server, "/v1/chat/completions", huge), 413)


@pytest.mark.parametrize(
    "path,body,param",
    [
        ("/v1/completions", {"model": "m"}, "prompt"),
        ("/v1/completions", {"model": "m", "prompt": ""}, "prompt"),
        ("/v1/completions", {"model": "m", "prompt": "hi", "echo": True}, "echo"),
        ("/v1/embeddings", {"model": "m"}, "input"),
        ("/v1/embeddings", {"model": "m", "input": []}, "input"),
        ("/v1/embeddings", {"model": "m", "input": ["ok", ""]}, "input"),
        ("/v1/embeddings", {"model": "m", "input": "ok", "dimensions": 12}, "dimensions"),
    ],
)
def test_bad_other_endpoints(server, path, body, param):
    assert_envelope(post(server, path, body), 400, param)


def test_sdk_raises_bad_request(openai_client):
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.chat.completions.create(model="m", messages=[], max_tokens=4)
    assert info.value.status_code == 400


def test_server_still_answers_after_bad_input(openai_client):
    r = openai_client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Say yes."}], max_tokens=4)
    assert r.choices[0].message.content is not None


def test_strict_model_list_answers_unknown_names_with_404(tmp_path):
    from tests.conftest import ROOT, Server

    gguf = ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'strict_models = true\n[model_map]\n"house-model" = "{gguf}"\n')
    srv = Server(tmp_path / "cache", "--config", str(cfg)).start()
    try:
        ok = post(srv, "/v1/chat/completions", {**GOOD, "model": "house-model"})
        assert ok.status_code == 200 and ok.json()["model"] == "house-model"
        err = assert_envelope(post(srv, "/v1/chat/completions", {**GOOD, "model": "gpt-4o"}), 404, "model")
        assert err["code"] == "model_not_found"
        assert [m["id"] for m in httpx.get(srv.url + "/v1/models").json()["data"]] == ["house-model"]
    finally:
        srv.stop()
