"""`edge-ai doctor`: a healthy set-up passes; each problem is named with its fix and fails the run."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT


def doctor(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    user = {k: v for k, v in os.environ.items() if k != "EDGE_AI_MODEL"}  # the suite's pin would hide the config's
    return subprocess.run([sys.executable, "-m", "edge_ai", "doctor", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**user, **(env or {})})


def test_a_healthy_setup_passes(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'cache_dir = "{tmp_path / "cache"}"\n')
    out = doctor("--config", str(cfg), "--no-network")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[ok  ] model:" in out.stdout and "sha256 matches" in out.stdout
    assert "[ok  ] cache_dir:" in out.stdout and "[ok  ] cpu:" in out.stdout


def test_problems_are_named_with_their_fix(tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("x")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'''cache_dir = "{blocked / "cache"}"
model = "{tmp_path / "missing.gguf"}"

[[api_keys]]
key = "sk-in-the-clear"
tenant = "t"

[[upstreams]]
name = "down"
dialect = "openai"
base_url = "http://127.0.0.1:9"
api_key = "k"
''')
    cfg.chmod(0o644)
    out = doctor("--config", str(cfg))
    assert out.returncode == 1
    text = out.stdout
    assert "[FAIL] model:" in text and "fix: run `edge-ai fetch-models`" in text
    assert "[FAIL] cache_dir:" in text and "not writable" in text
    assert "[FAIL] api_keys:" in text and "chmod 600" in text
    assert "[warn] upstream down:" in text and "unreachable" in text
    assert "sk-in-the-clear" not in text + out.stderr


def test_bad_settings_are_reported_not_a_traceback(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[[api_keys]]\ntenant = "t"\n')  # neither key nor key_sha256
    out = doctor("--config", str(cfg), "--no-network")
    assert out.returncode == 1
    assert "exactly one of key and key_sha256" in out.stderr and "Traceback" not in out.stderr
