"""Gateway mode passing each client's own cloud key through: by default every key is its own tenant, so
once the cloud is down no customer is served what the cloud told another; a setting opts into sharing."""

from __future__ import annotations

import time
import uuid
from typing import get_args

import anthropic
import httpx
import pytest

from edge_ai.config import Settings
from edge_ai.fake_cloud import FakeCloud
from tests.conftest import Server

KEY_A, KEY_B = "sk-ant-customer-a-1111", "sk-ant-customer-b-2222"
# the setting's two values, as the settings class spells them: a tenant per key, or one cache for the site
PER_KEY, ONE_CACHE = get_args(Settings.model_fields["passthrough_tenancy"].annotation)


@pytest.fixture(scope="module")
def cloud():
    c = FakeCloud().start()
    yield c
    c.stop()


def gateway(cloud, d, tenancy: str) -> Server:
    cfg = d / "edge.toml"
    cfg.write_text(f"""
passthrough_tenancy = "{tenancy}"
breaker_failures = 3
breaker_cooldown = 60

[[upstreams]]
name = "claude"
dialect = "anthropic"
base_url = "{cloud.url}"
first_byte_timeout = 2.0
""")
    return Server(d / "cache", "--config", str(cfg)).start()


@pytest.fixture(scope="module")
def per_key(cloud, tmp_path_factory):
    srv = gateway(cloud, tmp_path_factory.mktemp("perkey"), PER_KEY)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def one_cache(cloud, tmp_path_factory):
    srv = gateway(cloud, tmp_path_factory.mktemp("onecache"), ONE_CACHE)
    yield srv
    srv.stop()


def ask(srv: Server, key: str, question: str) -> tuple[str, str]:
    client = anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0, timeout=60)
    raw = client.messages.with_raw_response.create(model="claude-sonnet-4-5", max_tokens=12,
                                                   messages=[{"role": "user", "content": question}])
    return raw.headers["x-edge-source"], raw.parse().content[0].text


def wait_entries(srv: Server, n: int) -> None:
    for _ in range(100):
        if srv.status()["cache"]["entries"] >= n:
            return
        time.sleep(0.05)
    raise AssertionError("the cloud answer was not written through")


def test_each_passed_through_key_is_its_own_tenant(cloud, per_key):
    cloud.set("healthy")
    question = f"What is our refund policy? ({uuid.uuid4().hex[:6]})"
    assert ask(per_key, KEY_A, question) == ("cloud", f"Cloud answer: {question}")
    wait_entries(per_key, 1)
    cloud.set("status", code=529)
    try:
        src_b, text_b = ask(per_key, KEY_B, question)
        assert src_b == "local" and text_b != f"Cloud answer: {question}"  # never A's answer
        assert ask(per_key, KEY_A, question) == ("cache", f"Cloud answer: {question}")  # A's own, during the outage
    finally:
        cloud.set("healthy")
    metrics = httpx.get(per_key.url + "/metrics").text  # open mode: no key needed
    assert 'edge_ai_failovers_total{reason="http_5xx"}' in metrics
    assert 'edge_ai_upstream_breaker_state{upstream="claude"} 0.0' in metrics  # 2 failures of 3: closed
    assert 'edge_ai_upstream_requests_total{outcome="http_5xx",upstream="claude"}' in metrics
    assert 'tenant="other"' in metrics and "key-" not in metrics  # per-key tenants are not label values
    stored = b"".join(p.read_bytes() for p in per_key.cache_dir.rglob("*") if p.is_file())
    assert KEY_A.encode() not in stored and KEY_B.encode() not in stored  # tenants come from a hash
    assert KEY_A not in per_key.log.read_text()


def test_one_cache_tenancy_serves_the_same_answers_across_the_sites_keys(cloud, one_cache):
    cloud.set("healthy")
    question = f"Where is the office? ({uuid.uuid4().hex[:6]})"
    assert ask(one_cache, KEY_A, question)[0] == "cloud"
    wait_entries(one_cache, 1)
    cloud.set("status", code=500)
    try:
        assert ask(one_cache, KEY_B, question) == ("cache", f"Cloud answer: {question}")
    finally:
        cloud.set("healthy")
    assert httpx.get(one_cache.url + "/readyz").status_code == 200


def test_admin_resets_an_open_breaker(cloud, per_key):
    cloud.set("status", code=500)
    try:
        for _ in range(4):  # breaker_failures = 3 in this gateway
            ask(per_key, KEY_A, f"Ping {uuid.uuid4().hex[:6]}")
            state = httpx.get(per_key.url + "/admin/upstreams").json()["upstreams"][0]["state"]
            if state == "open":
                break
        assert state == "open"
    finally:
        cloud.set("healthy")
    ups = httpx.get(per_key.url + "/admin/upstreams").json()
    assert ups["last_failover"]["reason"].startswith("claude: ")
    r = httpx.post(per_key.url + "/admin/upstreams/claude/reset")
    assert r.status_code == 200 and r.json()["state"] == "closed"
    assert ask(per_key, KEY_A, f"Hello {uuid.uuid4().hex[:6]}")[0] == "cloud"  # no cooldown to wait out
    assert httpx.post(per_key.url + "/admin/upstreams/nope/reset").status_code == 404
