"""The hit decision: paraphrases hit, near-misses that share all words but one don't, vetoes hold."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from edge_ai.cli import app
from edge_ai.evaluate import precision_at
from edge_ai.hit import DEFAULT_MODEL, FEATURES, HitModel, contradicts, differing


def decide(parts, cached: str, asked: str, threshold: float | None = None) -> tuple[float, float, bool]:
    embedder, judge = parts
    a, b = embedder.encode([cached, asked])
    sim = float(a @ b)
    limit = judge.model.threshold if threshold is None else threshold
    score = judge.score(sim, cached, asked)
    return sim, score, score >= limit


PARAPHRASES = [
    ("How do I reset my password?", "How can I reset my password?"),
    ("Why is the ocean salty?", "Why is the sea salty?"),
    ("Why is the sky blue?", "What makes the sky blue?"),
    ("What is machine learning?", "Can you explain what machine learning is?"),
]
NEAR_MISSES = [  # cosine alone would take these (Quora marks them different): a name changes the answer
    ("What are the safety precautions for shotguns proposed by the NRA in Connecticut?",
     "What are the safety precautions for shotguns proposed by the NRA in New York?"),
    ("How do bartenders become bartenders in California?", "How do bartenders become bartenders in Texas?"),
]


@pytest.mark.parametrize("cached,asked", PARAPHRASES)
def test_paraphrases_hit(parts, cached, asked):
    sim, score, hit = decide(parts, cached, asked)
    assert hit, (sim, score)


@pytest.mark.parametrize("cached,asked", NEAR_MISSES)
def test_near_misses_are_refused_where_cosine_alone_would_hit(parts, cached, asked):
    sim, score, hit = decide(parts, cached, asked)
    assert sim >= 0.90  # a plain cosine threshold of 0.90 serves the wrong answer
    assert not hit, (sim, score)


def test_score_is_the_similarity_less_penalties(parts):
    _, same, _ = decide(parts, "How do I reset my password?", "How do I reset my password?")
    _, para, _ = decide(parts, *PARAPHRASES[0])
    _, miss, _ = decide(parts, *NEAR_MISSES[0])
    _, far, _ = decide(parts, "How do I reset my password?", "What is the capital of France?")
    assert 1.0 + 1e-6 >= same >= para > miss > far
    sim, _, _ = decide(parts, *NEAR_MISSES[0])
    assert miss < sim  # "Connecticut" / "New York": names on one side only cost


@pytest.mark.parametrize("cached,asked", [
    ("What is 2 + 2?", "What is 2 + 3?"),
    ("Who won the football world cup in 2018?", "Who won the football world cup in 2022?"),
    ("Can I take ibuprofen with coffee?", "Can't I take ibuprofen with coffee?"),
    ("Can I take ibuprofen with coffee?", "Can’t I take ibuprofen with coffee?"),  # a typographic apostrophe
    ("Can I swim?", "Can't I swim?"),  # short: "can't" must still share "can"
    ("How do you convert ethane to ethene?", "How do you convert ethene to ethane?"),  # two words trade places
    ("How do I increase the font size in VS Code?", "How do I decrease the font size in VS Code?"),  # opposites
    ("Which stores are open on Monday?", "Which stores are open on Tuesday?"),  # one name for another
    ("Is the moon bigger than Mars?", "Is the moon smaller than Mars?"),
    ("How do I enable dark mode on iPhone?", "How do I disable dark mode on iPhone?"),
    ("How to upload a file to S3 with boto3?", "How to download a file from S3 with boto3?"),  # two pairs
    ("The meeting moved from Monday to Tuesday.", "The meeting moved from Tuesday to Monday."),
    ("Why is this wrong?\n```python\ndef area(w, h):\n    return w + h\n```",
     "Why is this wrong?\n```python\ndef area(w, h):\n    return w * h\n```"),  # code must match
    ("Will it rain?", "Won't it rain?"),
    # the same numbers in another order: a score, a range, a version, a date
    ("The match ended 2-1. Who won, the home team or the away team?",
     "The match ended 1-2. Who won, the home team or the away team?"),
    ("Crash test question 1-0: name a colour.", "Crash test question 0-1: name a colour."),
    ("What is 10 - 3?", "What is 3 - 10?"),
    ("What changed from Python 3.11 to 3.12?", "What changed from Python 3.12 to 3.11?"),
    ("What happened on 3/4/2021?", "What happened on 4/3/2021?"),
])
def test_vetoes_hold_whatever_the_model_says(parts, cached, asked):
    assert contradicts(cached, asked)
    sim, score, hit = decide(parts, cached, asked, threshold=0.0001)
    assert sim > 0.75 and score == 0.0 and not hit  # cosine alone would take them


@pytest.mark.parametrize("cached,asked", [
    ("If the audio dataset doesn't have any metadata, AudioFolder creates a label column from the directory name.",
     "AudioFolder creates a label column from the directory name in the absence of any metadata in the audio dataset."),
    ("How do I stop worrying about what others think of me?", "How do I learn not to care about what people think of me?"),
    ("Why can’t PIL display a depth map stored as float?", "Why cannot PIL display a depth map stored as float?"),  # both negated
    ("Since resetting my password, I can't log in to my account.",
     "Since resetting my password, I am unable to log in to my account."),  # both negated, one in other words
    ("Should I learn French and German?", "Should I learn German and French?"),  # "X and Y" is "Y and X"
    ("What is the fastest way to lose weight?", "What is the quickest way to lose weight?"),  # no opposites
    ("Is the shop open on Sunday?", "Is the shop open on Sundays?"),  # a plural is the same name
    ("Why should we stop animal abuse?", "Why we should stop animal abuse?"),  # neighbours swapped
    ("Why is this wrong?\n```\nx = f(1)\n```", "Why is this wrong?\n```\nx  =  f(1)\n\n```"),  # code, spaced otherwise
    ("What is 7 times 7?", "What do you get when you multiply 7 by 7?"),  # a number said twice is one number
    ("Should I buy the 2016 or 2015 MacBook Pro?", "Should I get the 2015 MacBook Pro or the 2016 MacBook Pro?"),  # a list
    ("What will the ban of 500 and 1000 rupee notes do to the economy?",
     "What will the ban of 1000 and 500 rupee notes do to the economy?"),
    ("The layout is:\n```\ndata/train/a.mp3\ndata/test/b.mp3\n```", "The layout is as follows:\ndata/train/a.mp3\ndata/test/b.mp3"),  # unfenced
])
def test_what_does_not_change_the_answer_is_no_veto(parts, cached, asked):
    """The negation veto is for wording shared but for a "not"; a paraphrase that says it in other words
    is left to the score. Nor do symmetric pairs, swapped neighbours or re-spaced code veto."""
    assert not contradicts(cached, asked)
    assert decide(parts, cached, asked, threshold=0.75)[2]


def test_threshold_is_strictness(parts):
    _, score, _ = decide(parts, *PARAPHRASES[2])
    assert decide(parts, *PARAPHRASES[2], threshold=score)[2]
    assert not decide(parts, *PARAPHRASES[2], threshold=score + 1e-6)[2]


def test_model_file_must_match_the_features(tmp_path):
    raw = json.loads(DEFAULT_MODEL.read_text())
    raw["features"] = list(FEATURES[:-1])
    bad = tmp_path / "hit.json"
    bad.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="features"):
        HitModel.load(bad)
    bonus = tmp_path / "bonus.json"  # a score above its similarity would hide candidates from the index
    bonus.write_text(json.dumps({**raw, "features": list(FEATURES), "weights": [1.0, 0.05, 0.0]}))
    with pytest.raises(ValueError, match="penalties"):
        HitModel.load(bonus)
    good = tmp_path / "ok.json"
    good.write_text(json.dumps({**raw, "features": list(FEATURES)}))
    assert np.allclose(HitModel.load(good).weights, raw["weights"])


def test_eval_pairs_reports_the_production_decision(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"text_a": a, "text_b": b, "label": 1} for a, b in PARAPHRASES]
    rows += [{"text_a": a, "text_b": b, "label": 0} for a, b in NEAR_MISSES]
    pairs.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = CliRunner().invoke(app, ["eval", "pairs", str(pairs)])
    assert out.exit_code == 0, out.output
    assert "precision 1.000  recall 1.000" in out.output and f"(tp {len(PARAPHRASES)}, fp 0, fn 0)" in out.output
    assert "precision at recall 0.30 / 0.40 / 0.50: 1.000 / 1.000 / 1.000" in out.output  # every paraphrase outranks every near-miss


def test_precision_at_recall_reads_the_ranking():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    labels = np.array([1, 0, 1, 1, 0])
    assert precision_at(scores, labels, 0.30) == 1.0  # the surest pair alone reaches a third of the positives
    assert precision_at(scores, labels, 0.50) == 2 / 3  # two positives need the top three
    assert precision_at(scores, labels, 1.00) == 3 / 4
    assert precision_at(scores[::-1], labels[::-1], 1.00) == 3 / 4  # the scores rank, not the input's order


def test_eval_retrieval_counts_right_wrong_and_miss(tmp_path):
    data = tmp_path / "mock.json"
    data.write_text(json.dumps([
        {"origin": "Why is the ocean salty?", "similar": "Why is the sea salty?"},
        {"origin": NEAR_MISSES[1][0], "similar": NEAR_MISSES[1][1]},
    ]))
    out = CliRunner().invoke(app, ["eval", "retrieval", str(data)])
    assert out.exit_code == 0, out.output
    assert "right 1  wrong 0 (0 same question)  miss 1" in out.output


def test_eval_retrieval_asks_more_questions_than_the_embedders_queue_holds(parts, tmp_path):
    from edge_ai.evaluate import _retrieval

    embedder, judge = parts
    pairs = [{"origin": f"How many legs does animal number {i} have?", "similar": f"How many legs has animal number {i}?"} for i in range(24)]
    embedder.max_queue = 8  # the lookups are handed over in parts, not all at once
    try:
        result = asyncio.run(_retrieval(pairs, embedder, judge, 0.80))
    finally:
        embedder.max_queue = 1024
    assert result["right"] + result["miss"] == 24 and result["wrong"] == 0 and result["right"] > 12


def test_eval_retrieval_shows_what_a_wrong_hit_served(tmp_path):
    data = tmp_path / "mock.json"
    data.write_text(json.dumps([
        {"origin": "Why is the ocean salty?", "similar": "Why is the sea salty?"},
        {"origin": "How do I reset my password?", "similar": "Why is the ocean salty?"},  # asks the other one
    ]))
    out = CliRunner().invoke(app, ["eval", "retrieval", str(data), "--show-wrong"])
    assert out.exit_code == 0, out.output
    assert "right 1  wrong 1 (0 same question)  miss 0" in out.output
    assert "similarity 1.000\n  asked:  Why is the ocean salty?\n  served: Why is the ocean salty?\n" \
           "  right:  How do I reset my password?" in out.output


def test_eval_retrieval_tells_a_wrong_id_from_a_wrong_answer(tmp_path):
    """Two origins asking one question (cosine 0.95): each paraphrase is served the other, which the decision
    would also serve for its own origin; a wrong hit on an unrelated origin is not "same question"."""
    data = tmp_path / "mock.json"
    data.write_text(json.dumps([
        {"origin": "Why is the ocean salty?", "similar": "Why is the sea salty?"},
        {"origin": "Why is the sea salty?", "similar": "Why is the ocean salty?"},
        {"origin": "How do I reset my password?", "similar": "Why is the ocean salty?"},
    ]))
    out = CliRunner().invoke(app, ["eval", "retrieval", str(data), "--show-wrong"])
    assert out.exit_code == 0, out.output
    assert "right 0  wrong 3 (2 same question)  miss 0" in out.output
    assert out.output.count("(same question)\n") == 2


def test_differing_keeps_the_stretch_that_differs_with_context():
    head = " ".join(f"h{i}" for i in range(20))
    tail = " ".join(f"t{i}" for i in range(12))
    a, b = differing(f"{head} red apples {tail}", f"{head} green pears {tail}", context=3)
    assert (a, b) == ("h17 h18 h19 red apples t0 t1 t2", "h17 h18 h19 green pears t0 t1 t2")
    # an insertion: one side's stretch is only the context
    assert differing(f"{head} apples", f"{head} apples quickly", context=2) == ("h19 apples", "h19 apples quickly")
    # nothing to narrow: the prompts share no more than the context at either end
    assert differing("How do I reset my password?", "How can I reset my password?") is None
    assert differing("same words here", "same words here") is None
    # a shared end that is short against the prompts: the stretch would be nearly the whole of both
    shared = "The select method of the table class returns a new table"  # 11 words: 3 past the context
    assert differing(f"{shared} with the columns you name, and the metadata of the old one is kept as it was.",
                     f"{shared}, keeping the old table's metadata, holding only the columns you named.") is None
    # ...but a long prompt's shared start is most of what the embedder reads of it (256 tokens)
    long_a, long_b = " ".join(f"a{i}" for i in range(900)), " ".join(f"b{i}" for i in range(900))
    assert differing(f"{head} {head} {head} {head} {head} {long_a}", f"{head} {head} {head} {head} {head} {long_b}")


def test_the_differing_stretch_lowers_a_score_never_raises_it(parts):
    _, judge = parts
    cached, asked = "x " * 20 + "charged twice", "x " * 20 + "dashboard down"
    whole = judge.score(0.95, cached, asked)
    assert judge.score(0.95, cached, asked, 0.40) == pytest.approx(0.40)
    assert judge.score(0.95, cached, asked, 0.99) == whole  # the lower of the two
    assert judge.score(0.95, "How do I reset it?", "How can I reset it?", 0.10) == judge.score(0.95, "How do I reset it?", "How can I reset it?")


def test_code_that_differs_inside_a_long_prompt_is_vetoed_though_the_stretch_cuts_the_block(parts):
    _, judge = parts
    body = "\n".join(f"    total_{i} = compute(total_{i - 1}, step={i})" for i in range(1, 12))
    cached = f"Why is this slow?\n```python\ndef run():\n{body}\n    return a + b\n{body}\n```"
    asked = cached.replace("return a + b", "return a * b")
    where = differing(cached, asked)
    assert where is not None and "```" not in where[0]  # the premise: the stretch holds no fence
    assert judge.score(0.99, cached, asked, 0.99) == 0.0
