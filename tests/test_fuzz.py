"""Schema-driven fuzzing (schemathesis) against the served /openapi.json: no request, however odd, gets a
server error. Bounded (a fixed seed and example count) so it runs in CI in seconds."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import Server

KEY = "sk-fuzz-admin"
SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent))


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    cfg = d / "edge.toml"
    cfg.write_text(f'default_max_tokens = 8\n\n[[api_keys]]\nkey = "{KEY}"\ntenant = "fuzz"\nadmin = true\n')
    cfg.chmod(0o600)
    # a small context bounds every answer (Anthropic's max_tokens is a ceiling cut to the context): a
    # generated request asking 10^6 tokens is answered, not timed out
    srv = Server(d / "cache", "--config", str(cfg), env={"EDGE_AI_N_CTX_SLOT": "256"}).start()
    yield srv
    srv.stop()


@pytest.mark.skipif(SCHEMATHESIS is None, reason="schemathesis is not installed (pip install -e '.[test]')")
@pytest.mark.parametrize("auth", ["admin key", "no key"])
def test_no_server_error_for_any_generated_request(service, auth):
    headers = ["-H", f"Authorization: Bearer {KEY}"] if auth == "admin key" else []
    out = subprocess.run(
        [SCHEMATHESIS, "run", f"{service.url}/openapi.json", "--url", service.url, "--checks", "not_a_server_error",
         "--max-examples", "25", "--phases", "coverage,fuzzing", "--seed", "1", "--request-timeout", "60", *headers],
        capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", out.stdout)
    assert counts and counts.group(1) == counts.group(2) and int(counts.group(1)) > 500, out.stdout[-2000:]
    assert service.proc is not None and service.proc.poll() is None  # still up
