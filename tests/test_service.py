"""edge-ai as a shared service: keys and tenants, per-key limits, admin, metrics, JSON logs, OpenAPI and
/docs, driven through the official SDKs against a real server with keys in its TOML file."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import time
import uuid

import anthropic
import httpx
import openai
import pytest

from tests.conftest import ROOT, Server

ALPHA, BETA, OPS, SCRAPER, LIMITED = "sk-alpha-0001", "sk-beta-0002", "sk-ops-0003", "sk-metrics-0004", "sk-limited-0005"
SINGLE = "sk-single-0006"


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("service")
    cfg = d / "edge.toml"
    cfg.write_text(f"""
log_format = "json"

[[api_keys]]
key_sha256 = "{hashlib.sha256(ALPHA.encode()).hexdigest()}"
tenant = "alpha"

[[api_keys]]
key = "{BETA}"
tenant = "beta"

[[api_keys]]
key = "{OPS}"
tenant = "ops"
admin = true

[[api_keys]]
key = "{SCRAPER}"
tenant = "ops"
metrics = true

[[api_keys]]
key = "{LIMITED}"
tenant = "limited"
requests_per_minute = 2

[[api_keys]]
key = "{SINGLE}"
tenant = "single"
max_concurrent = 1
""")
    cfg.chmod(0o600)
    srv = Server(d / "cache", "--config", str(cfg), "--speculate").start()  # the default; the suite pins it off
    yield srv
    srv.stop()


def oa(service, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=service.url + "/v1", api_key=key, max_retries=0, timeout=120)


def an(service, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=service.url, api_key=key, max_retries=0, timeout=120)


def chat(client: openai.OpenAI, question: str, system: str, stream: bool = False, **headers: str) -> tuple[str, str]:
    """(x-edge-source, answer text)."""
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": question}]
    if stream:
        with client.chat.completions.with_streaming_response.create(
            model="gpt-4o", messages=msgs, max_tokens=12, stream=True, extra_headers=headers
        ) as resp:
            text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                           for line in resp.iter_lines() if line.startswith("data: {"))
            return resp.headers["x-edge-source"], text
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o", messages=msgs, max_tokens=12, extra_headers=headers)
    return raw.headers["x-edge-source"], raw.parse().choices[0].message.content


def message(client: anthropic.Anthropic, question: str, system: str, stream: bool = False) -> tuple[str, str]:
    msgs = [{"role": "user", "content": question}]
    if stream:
        with client.messages.with_streaming_response.create(
            model="claude-sonnet-4-5", system=system, messages=msgs, max_tokens=12, stream=True
        ) as resp:
            text = "".join(json.loads(line[6:]).get("delta", {}).get("text", "")
                           for line in resp.iter_lines() if line.startswith("data: {"))
            return resp.headers["x-edge-source"], text
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", system=system, messages=msgs, max_tokens=12)
    return raw.headers["x-edge-source"], raw.parse().content[0].text


def system() -> str:
    return f"You are a helpful assistant. ({uuid.uuid4().hex[:8]})"


# ---- keys ---------------------------------------------------------------------------------------


def test_no_key_or_a_wrong_key_is_401_in_each_dialects_envelope(service):
    for key in ("", "sk-wrong"):
        with pytest.raises(openai.AuthenticationError) as e:
            oa(service, key or "x").chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=2,
                extra_headers={"authorization": ""} if not key else None)
        assert e.value.status_code == 401
        assert e.value.body["code"] == "invalid_api_key"
        with pytest.raises(anthropic.AuthenticationError) as e2:
            an(service, key or "x").messages.create(model="m", max_tokens=2, messages=[{"role": "user", "content": "hi"}],
                                                    extra_headers={"x-api-key": ""} if not key else None)
        assert e2.value.status_code == 401
        assert e2.value.body["error"]["type"] == "authentication_error"


def test_bearer_and_x_api_key_both_authenticate(service):
    for headers in ({"authorization": f"Bearer {ALPHA}"}, {"x-api-key": ALPHA}):
        r = httpx.get(service.url + "/v1/models", headers=headers)
        assert r.status_code == 200, r.text
    assert httpx.get(service.url + "/v1/models").status_code == 401


def test_admin_endpoints_need_an_admin_key(service):
    for path in ("/admin/cache/stats", "/admin/keys", "/admin/upstreams"):
        r = httpx.get(service.url + path, headers={"authorization": f"Bearer {ALPHA}"})
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "permission_denied"
        assert httpx.get(service.url + path).status_code == 401
        assert httpx.get(service.url + path, headers={"authorization": f"Bearer {OPS}"}).status_code == 200
    assert httpx.get(service.url + "/admin/keys", headers={"x-api-key": SCRAPER}).status_code == 403  # metrics only


def test_key_listing_shows_hash_prefixes_never_keys(service):
    r = httpx.get(service.url + "/admin/keys", headers={"x-api-key": OPS})
    body = r.text
    for key in (ALPHA, BETA, OPS, SCRAPER, LIMITED):
        assert key not in body
    listed = {k["key_id"]: k for k in r.json()["keys"]}
    ids = {key: hashlib.sha256(key.encode()).hexdigest()[:12] for key in (ALPHA, OPS, SCRAPER)}
    assert listed[ids[ALPHA]]["tenant"] == "alpha" and listed[ids[ALPHA]]["admin"] is False
    assert listed[ids[OPS]]["admin"] is True and listed[ids[SCRAPER]]["metrics"] is True
    assert listed[ids[OPS]]["last_used"] is not None


# ---- tenants ------------------------------------------------------------------------------------


def test_tenants_never_see_each_others_entries_openai(service):
    a, b, sys_prompt = oa(service, ALPHA), oa(service, BETA), system()
    q = "How do I reset my password?"
    src, answer = chat(a, q, sys_prompt)
    assert src == "local"
    assert chat(a, q, sys_prompt) == ("cache", answer)  # exact hit, own tenant
    assert chat(a, "How can I reset my password?", sys_prompt)[0] == "cache"  # semantic hit, own tenant
    assert chat(b, q, sys_prompt)[0] == "local"  # the other tenant: not an exact hit
    assert chat(b, "How can I reset my password?", sys_prompt, stream=True)[0] == "cache"  # b's own entry now
    # a header cannot move a key into another tenant: it only narrows within the key's own
    assert chat(oa(service, BETA), "What is the capital of Peru?", sys_prompt)[0] == "local"
    assert chat(b, "What is the capital of Peru?", sys_prompt, **{"x-edge-tenant": "alpha"})[0] == "local"
    assert chat(a, "What is the capital of Peru?", sys_prompt, stream=True)[0] == "local"


def test_tenants_never_see_each_others_entries_anthropic_streaming(service):
    a, b, sys_prompt = an(service, ALPHA), an(service, BETA), system()
    q = "Why is the sky blue?"
    src, answer = message(a, q, sys_prompt, stream=True)
    assert src == "local"
    assert message(a, q, sys_prompt, stream=True) == ("cache", answer)
    assert message(a, "Why's the sky blue?", sys_prompt)[0] == "cache"
    assert message(b, q, sys_prompt, stream=True)[0] == "local"
    assert message(b, "Why's the sky blue?", sys_prompt)[0] == "cache"  # b's own answer, made just now


def _edge_ai(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_ai", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def _until_served(client, question: str, sys_prompt: str, answer: str) -> tuple[str, str]:
    """The server picks up another process's writes within about a second: (source, text) once the
    answer is `answer`, or the last reply after ten seconds."""
    for _ in range(40):
        got = chat(client, question, sys_prompt)
        if got[1] == answer:
            return got
        time.sleep(0.25)
    return got


def test_warm_up_and_import_fill_only_the_named_tenant(service, tmp_path):
    sys_prompt = system()
    question = "Which planet is known as the red planet?"
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({
        "request": {"model": "gpt-4o", "max_tokens": 12, "messages": [{"role": "system", "content": sys_prompt}, {"role": "user", "content": question}]},
        "response": {"choices": [{"message": {"role": "assistant", "content": "Mars."}, "finish_reason": "stop"}],
                     "usage": {"prompt_tokens": 20, "completion_tokens": 2}},
    }) + "\n")
    warm = _edge_ai("warm", str(log), "--tenant", "alpha", "--cache-dir", str(service.cache_dir))
    assert warm.returncode == 0, warm.stdout + warm.stderr
    assert _until_served(oa(service, ALPHA), question, sys_prompt, "Mars.") == ("cache", "Mars.")
    assert chat(oa(service, BETA), question, sys_prompt)[0] == "local"  # alpha's warmed answer is alpha's

    exported = tmp_path / "alpha.jsonl"
    out = _edge_ai("cache", "export", str(exported), "--cache-dir", str(service.cache_dir))
    assert out.returncode == 0, out.stderr
    lines = [line for line in exported.read_text().splitlines() if json.loads(line)["answer"] == "Mars."]
    only = tmp_path / "mars.jsonl"
    only.write_text(lines[0] + "\n")
    imp = _edge_ai("cache", "import", str(only), "--tenant", "beta", "--cache-dir", str(service.cache_dir))
    assert imp.returncode == 0, imp.stdout + imp.stderr
    # beta's own local answer is cached by now; the imported one replaces it (it outranks a local one)
    assert _until_served(oa(service, BETA), question, sys_prompt, "Mars.") == ("cache", "Mars.")


# ---- limits -------------------------------------------------------------------------------------


def test_requests_per_minute_is_429_with_retry_after_in_both_dialects(service):
    client = httpx.Client(base_url=service.url, headers={"authorization": f"Bearer {LIMITED}"})
    assert client.get("/v1/models").status_code == 200
    assert client.get("/v1/models").status_code == 200
    r = client.get("/v1/models")
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    assert r.json()["error"]["code"] == "rate_limit_exceeded"
    with pytest.raises(anthropic.RateLimitError) as e:
        an(service, LIMITED).messages.create(model="m", max_tokens=2, messages=[{"role": "user", "content": "hi"}])
    assert e.value.response.headers["retry-after"]
    assert e.value.body["error"]["type"] == "rate_limit_error"
    assert httpx.get(service.url + "/v1/models", headers={"x-api-key": ALPHA}).status_code == 200  # others unaffected


def test_max_concurrent_holds_until_a_stream_ends(service):
    client = oa(service, SINGLE)
    msgs = [{"role": "user", "content": f"Count from 1 to 500, separated by commas. ({uuid.uuid4().hex[:6]})"}]
    with client.chat.completions.with_streaming_response.create(model="gpt-4o", messages=msgs, max_tokens=400, stream=True) as resp:
        lines = resp.iter_lines()
        next(lines)  # the stream is open and generating
        r = httpx.get(service.url + "/v1/models", headers={"x-api-key": SINGLE})
        assert r.status_code == 429 and r.headers["retry-after"]
        assert "in flight" in r.json()["error"]["message"]
        rest = [line for line in lines if line]
        # the held stream is not cut by the refusal: it runs to its finish_reason and [DONE] (how long the
        # model counts depends on the CPU's numerics, so its length is not asserted)
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("stop", "length")
    assert httpx.get(service.url + "/v1/models", headers={"x-api-key": SINGLE}).status_code == 200


# ---- admin --------------------------------------------------------------------------------------


def test_admin_lists_deletes_and_purges_a_tenants_entries(service):
    admin = httpx.Client(base_url=service.url, headers={"x-api-key": OPS}, timeout=30)
    sys_prompt = system()
    marker = uuid.uuid4().hex[:8]
    question = f"What does HTML stand for? ({marker})"
    assert chat(oa(service, BETA), question, sys_prompt)[0] == "local"
    assert chat(oa(service, BETA), question, sys_prompt)[0] == "cache"
    found = admin.get("/admin/cache/entries", params={"tenant": "beta", "q": marker}).json()["data"]
    assert [e["query"] for e in found] == [question]
    assert admin.get("/admin/cache/entries", params={"tenant": "alpha", "q": marker}).json()["data"] == []
    stats = admin.get("/admin/cache/stats").json()
    assert stats["by_tenant"]["beta"] >= 1 and stats["by_source"]["local"] >= 1

    assert admin.delete(f"/admin/cache/entries/{found[0]['id']}").json()["deleted"] is True
    assert admin.delete(f"/admin/cache/entries/{found[0]['id']}").status_code == 404
    assert chat(oa(service, BETA), question, sys_prompt)[0] == "local"  # deleted: answered anew, not served

    bad = admin.post("/admin/cache/purge", json={})
    assert bad.status_code == 400
    purged = admin.post("/admin/cache/purge", json={"tenant": "beta"}).json()["deleted"]
    assert purged >= 1
    assert admin.get("/admin/cache/stats").json()["by_tenant"].get("beta", 0) == 0
    assert chat(oa(service, BETA), question, sys_prompt)[0] == "local"


# ---- metrics, logs, schema ----------------------------------------------------------------------


def test_metrics_need_a_metrics_or_admin_key_and_use_prometheus_names(service):
    chat(oa(service, ALPHA), "What is two plus two?", system())
    assert httpx.get(service.url + "/metrics", headers={"x-api-key": ALPHA}).status_code == 403
    r = httpx.get(service.url + "/metrics", headers={"x-api-key": SCRAPER})
    assert r.status_code == 200
    text = r.text
    for name in (
        "edge_ai_requests_total", "edge_ai_request_duration_seconds_bucket", "edge_ai_time_to_first_token_seconds",
        "edge_ai_prompt_tokens_total", "edge_ai_generated_tokens_total", "edge_ai_cache_lookups_total",
        "edge_ai_cache_hit_similarity_bucket", "edge_ai_cache_entries", "edge_ai_embedder_batch_size_bucket",
        "edge_ai_embedder_queue_depth", "edge_ai_embedder_busy_seconds_total", "edge_ai_slots_busy",
        "edge_ai_llm_queue_depth", "edge_ai_llm_rejections_total", "edge_ai_truncated_prompts_total",
        "edge_ai_refused_requests_total", "edge_ai_event_loop_lag_seconds_bucket",
    ):
        assert name in text, name
    assert float(re.search(r"^edge_ai_event_loop_lag_seconds_count ([0-9.e+]+)$", text, re.M).group(1)) > 0  # it is probed
    assert 'edge_ai_requests_total{api="openai",model="SmolLM2-135M-Instruct.Q4_1",source="local",status="2xx",tenant="alpha"}' in text, [x for x in text.splitlines() if x.startswith("edge_ai_requests_total")]
    assert 'edge_ai_refused_requests_total{api="openai",reason="unauthorized"}' in text
    for key in (ALPHA, BETA, OPS, SCRAPER, LIMITED, SINGLE):
        assert key not in text
    # label values are bounded: only configured tenants and fixed words appear
    tenants = {part.split('"')[1] for part in text.split('tenant=')[1:]}
    assert tenants <= {"alpha", "beta", "ops", "limited", "single", "none", "other"}


def request_line(service, rid: str) -> dict:
    """The JSON request log's line for request `rid` (written once the response has gone out)."""
    for _ in range(50):
        lines = [json.loads(line) for line in service.log.read_text().splitlines() if line.startswith("{")]
        found = [x for x in lines if x.get("logger") == "edge_ai.requests" and x.get("request_id") == rid]
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError(f"no JSON request line for {rid}")


def test_speculation_is_counted_per_answer_in_the_log_and_metrics(service):
    code = "\n".join(f"def helper_{i}(value):\n    return Widget.build(value * {i}, name='w{i}')\n" for i in range(8))
    raw = oa(service, ALPHA).chat.completions.with_raw_response.create(
        model="gpt-4o", max_tokens=120, temperature=0, extra_headers={"x-edge-cache": "off"},
        messages=[{"role": "user", "content": f"Rewrite this code with Widget renamed to Part. Output only the code.\n\n{code}"}])
    logged = request_line(service, raw.headers["x-request-id"])
    assert logged["drafted_tokens"] > 0  # the answer copies the code: drafts were tried
    assert 0 <= logged["accepted_tokens"] <= logged["drafted_tokens"]
    text = httpx.get(service.url + "/metrics", headers={"x-api-key": SCRAPER}).text
    count = re.search(r'^edge_ai_llm_draft_tokens_per_answer_count\{kind="drafted",model="[^"]+"\} ([0-9.e+]+)$', text, re.M)
    assert count and float(count.group(1)) >= 1


def test_json_request_log_has_the_fields_and_no_prompts_or_keys(service):
    question = f"Name a color. ({uuid.uuid4().hex[:6]})"
    raw = oa(service, ALPHA).chat.completions.with_raw_response.create(
        model="gpt-4o", messages=[{"role": "system", "content": system()}, {"role": "user", "content": question}], max_tokens=12)
    assert float(re.fullmatch(r"app;dur=([0-9.]+)", raw.headers["server-timing"]).group(1)) >= 0  # the server's own time
    last = request_line(service, raw.headers["x-request-id"])
    assert last["path"] == "/v1/chat/completions"
    for field in ("request_id", "tenant", "api", "source", "status", "latency_ms", "prompt_tokens", "completion_tokens"):
        assert field in last, field
    assert last["tenant"] == "alpha" and last["api"] == "openai" and last["status"] == 200
    text = service.log.read_text()
    assert question not in text  # prompts only with log_prompts = true
    for key in (ALPHA, BETA, OPS):
        assert key not in text
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    refused = [x for x in lines if x.get("logger") == "edge_ai.requests" and x.get("refused")]
    assert refused and all(x["status"] in (401, 403, 429) for x in refused)


def test_openapi_publishes_both_dialects_and_docs_work_offline(service):
    doc = httpx.get(service.url + "/openapi.json").json()
    schemas = doc["components"]["schemas"]
    assert "OpenAI_ChatCompletionRequest" in schemas and "Anthropic_MessagesRequest" in schemas
    body = doc["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Anthropic_MessagesRequest"}
    assert "max_tokens" in schemas["Anthropic_MessagesRequest"]["required"]
    refs = json.dumps(doc).split('"$ref": "#/components/schemas/')[1:]
    assert all(r.split('"')[0] in schemas for r in refs)  # every reference resolves
    page = httpx.get(service.url + "/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in page and "cdn" not in page.lower()
    js = httpx.get(service.url + "/docs-assets/swagger-ui-bundle.js")
    assert js.status_code == 200 and len(js.content) > 100_000
