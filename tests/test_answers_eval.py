"""`edge-ai eval answers`: the grading (what counts as garbage) and the packaged question set."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_ai.evaluate import garbage, grade, read_questions

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text,bad", [
    ("The capital of France is Paris.", False),
    ("Paris is very, very beautiful.", False),
    ("What is the capital and locale of some countries on the left?ওই", True),  # another script
    ("Пари́ж — столица Франции.", True),
    ("Café au lait, naïve, façade: Latin letters with accents are English enough.", False),
    ("the answer is the answer is the answer is", True),  # a phrase three times in a row
    ("no no no no", True),
    ("A\nB\nA\nB\nA\nB", True),  # the same lines again and again
])
def test_garbage(text, bad):
    assert bool(garbage(text)) == bad


def test_grade_verdicts():
    assert grade("q", r"\bparis\b", "It is Paris.").verdict == "correct"
    assert grade("q", r"\bparis\b", "It is Lyon.").verdict == "wrong"
    assert grade("q", r"\bparis\b", "  ").verdict == "empty"
    assert grade("q", r"\bparis\b", "Paris Paris Paris Paris").verdict == "garbage"  # right word, unusable answer


def test_the_shipped_question_set_has_50_plus_valid_questions():
    rows = read_questions(ROOT / "scripts" / "eval" / "answers.jsonl")
    assert len(rows) >= 50 and len({r["q"] for r in rows}) == len(rows)


def test_a_bad_question_line_is_reported_with_its_number(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"q": "ok?", "a": "yes"}\n{"q": "broken", "a": "(unclosed"}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_questions(f)
