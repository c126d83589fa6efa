"""The dashboard in a real browser (Debian's headless Chromium): after known traffic it shows the real
counts, and a screenshot is saved (EDGE_AI_ARTIFACTS, else the test's temporary directory)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Server

ADMIN = "sk-dash-admin"
USER = "sk-dash-user"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("dash")
    cfg = d / "edge.toml"
    cfg.write_text(f"""
[[api_keys]]
key = "{USER}"
tenant = "support"

[[api_keys]]
key = "{ADMIN}"
tenant = "ops"
admin = true
""")
    cfg.chmod(0o600)
    srv = Server(d / "cache", "--config", str(cfg)).start()
    yield srv
    srv.stop()


def browser(url: str, profile: Path, *extra: str) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
           "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}", "--virtual-time-budget=4000",
           *extra, url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout


def cell(dom: str, id_: str) -> str:
    m = re.search(rf'id="{id_}"[^>]*>([^<]*)<', dom)
    assert m, f"#{id_} not in the page"
    return m.group(1)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_dashboard_shows_the_real_counts_in_a_browser(service, tmp_path):
    client = openai.OpenAI(base_url=service.url + "/v1", api_key=USER, max_retries=0, timeout=120)
    system = f"You are terse. ({uuid.uuid4().hex[:6]})"
    questions = ["What is the capital of France?", "How many legs does a spider have?", "What does HTML stand for?"]
    sources = []
    for _ in range(2):  # the first round is answered by the model, the second from the cache
        for q in questions:
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o", max_tokens=8, messages=[{"role": "system", "content": system}, {"role": "user", "content": q}])
            sources.append(raw.headers["x-edge-source"])
    assert sources == ["local"] * 3 + ["cache"] * 3

    data = httpx.get(service.url + "/dashboard/data", headers={"x-api-key": ADMIN}).json()
    assert data["answers"] == {"cloud": 0, "cache": 3, "local": 3}
    assert httpx.get(service.url + "/dashboard/data", headers={"x-api-key": USER}).status_code == 403

    url = f"{service.url}/dashboard#key={ADMIN}"
    dom = browser(url, tmp_path / "profile-dom", "--dump-dom")
    assert 'data-loaded="1"' in dom, dom[-2000:]
    assert cell(dom, "count-local") == "3"
    assert cell(dom, "count-cache") == "3"
    assert cell(dom, "count-cloud") == "0"
    assert cell(dom, "hit-ratio") == "50%"
    assert cell(dom, "entries") == "3"
    assert cell(dom, "state") == "ready"
    assert "support" in dom  # the cache-size table names the tenant
    assert "ms /" in cell(dom, "latency")

    # without a key the page asks for one instead of showing data
    bare = browser(f"{service.url}/dashboard", tmp_path / "profile-bare", "--dump-dom")
    assert "key refused (401)" in bare and 'data-loaded="1"' not in bare

    out = Path(os.environ.get("EDGE_AI_ARTIFACTS", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    shot = out / "dashboard.png"
    browser(url, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1280,900", "--hide-scrollbars")
    assert shot.is_file() and shot.stat().st_size > 10_000
    print(f"dashboard screenshot: {shot}")
