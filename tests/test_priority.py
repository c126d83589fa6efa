"""CpuTurns: the embedder's passes go before the model's next decode step."""

from __future__ import annotations

import threading

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
