"""CpuTurns: the embedder's passes go before the model's next decode step; llama.cpp's OpenMP threads spin
bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from edge_ai.engines.priority import CpuTurns


def _step_in_thread(turns: CpuTurns) -> threading.Event:
    stepped = threading.Event()

    def decode() -> None:
        turns.before_step()
        stepped.set()

    threading.Thread(target=decode, daemon=True).start()
    return stepped


def test_a_decode_step_waits_for_a_running_pass_and_goes_when_it_ends():
    turns = CpuTurns(max_wait_s=60)
    assert not turns.busy
    with turns.first():
        assert turns.busy
        stepped = _step_in_thread(turns)
        assert not stepped.wait(0.3)  # held while the pass runs (it may wait up to 60 s)
    assert stepped.wait(10)  # released as soon as the pass ends
    assert not turns.busy and turns.yielded_s > 0


def test_a_decode_step_waits_no_longer_than_its_bound_and_not_at_all_when_idle():
    turns = CpuTurns(max_wait_s=0.05)
    assert _step_in_thread(turns).wait(10) and turns.yielded_s == 0  # no pass: no wait
    with turns.first():
        with turns.first():  # passes overlap (follow-ups): the turn ends with the last
            pass
        assert turns.busy
        assert _step_in_thread(turns).wait(10)  # a flood of passes cannot stop decoding
    assert turns.yielded_s > 0


@pytest.mark.parametrize("preset, expected", [(None, "10000"), ("1234", "1234")])
def test_llama_cpps_openmp_runtime_loads_with_spinning_bounded_unless_the_environment_says(preset, expected):
    """What libgomp itself read when llama.cpp loaded it (OMP_DISPLAY_ENV makes it print its settings)."""
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env["OMP_DISPLAY_ENV"] = "VERBOSE"
    if preset is not None:
        env["GOMP_SPINCOUNT"] = preset
    out = subprocess.run([sys.executable, "-c", "import edge_ai.engines.llm"], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    if "OPENMP DISPLAY ENVIRONMENT" not in out.stderr + out.stdout:
        pytest.skip("this llama.cpp build does not use OpenMP")
    assert f"GOMP_SPINCOUNT = '{expected}'" in out.stderr + out.stdout
