"""Is a call needed at all? Offered tools, a small model calls one for questions general knowledge answers:
Qwen2.5-Coder-1.5B sent "What is the capital of Italy?" to get_weather(Rome), "Who wrote Hamlet?" to
search_docs, and "What is the capital of France?" to a curl command. It opens those calls as surely as
right ones (0.67-0.97), and asked inside the conversation whether it needs the tool, it says yes as
surely as for a right call: its tools and instructions pull it to act.

Asked apart from the conversation, with no tool in sight, the same model tells the two kinds apart with
two questions (`scripts/eval/call_need.py` on scripts/eval/call_need.jsonl: 52 requests, most written after
the agent eval; BENCHMARKS.md, "Needless calls"):
- KNOWLEDGE, "can general knowledge alone answer it?": "a tool is needed" at most 0.22 for questions, but
  imperatives fall as low: "Create a directory named build." 0.14, "Run the Python tests with pytest." 0.21.
- ACTION, "does it ask for something done on the user's computer, or live data?": those imperatives
  0.84-0.90; questions of general knowledge mostly 0.18-0.45, but questions about commands ("How do I
  create a directory in Linux?") up to 0.87, and live data ("Is it raining in Berlin?") as low as 0.26.
A call is needless where both say no tool: of the 44 requests asked, the rule rules out no call that was
needed, and lets 3 questions about commands through. A request that names a file is about that file,
which knowledge cannot answer: it is not asked.

So an answer to the user's own turn that calls a tool is checked once: the model is asked both questions,
each a one-token choice, in one batch. Where both say knowledge, the answer policy asks again without
the tools. After tool results the agent is mid-task and its calls are not questioned."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from edge_ai.edit_blocks import names_file
from edge_ai.engines.llm import EngineError, SamplingParams, Task
from edge_ai.errors import Overloaded
from edge_ai.local_models import LocalModel
from edge_ai.request import Message
from edge_ai.tool_calls import request_before

log = logging.getLogger("edge_ai.call_need")

JUDGE = "You are a careful judge."


@dataclass(frozen=True)
class Probe:
    """A yes/no question about the request; a tool is needed where `tool_answer`'s share is at least
    `least`. The thresholds sit between the measured ranges, nearer the questions': a needed call ruled
    out stalls an agent, a needless one let through costs a round trip."""

    text: str
    tool_answer: str
    least: float


KNOWLEDGE = Probe('Request: "{request}"\n\nCan an assistant answer this request correctly from general knowledge '
                  "alone, without reading files, running commands, or looking up live data? Answer yes or no.",
                  "no", 0.22)
ACTION = Probe('Request: "{request}"\n\nDoes this request ask the assistant to do something on the user\'s computer '
               "(create, change, run, or look at their files and programs) or to get live data? Answer yes or no.",
               "yes", 0.70)
PROBES = (KNOWLEDGE, ACTION)


def request_to_check(messages: Sequence[Message]) -> str | None:
    """The request a call answers, where the call is to be checked: the user's own turn, naming no file."""
    if not messages or messages[-1].role != "user":
        return None
    asked = request_before(messages, len(messages))
    if not asked or names_file(asked):
        return None
    return asked


def ask(model: LocalModel, probe: Probe, request: str) -> Task:
    """The question as a one-token choice: its Final's choice_weights are (the tool answer, the other)."""
    engine = model.engine
    tokens = model.chat_tokens(JUDGE, (Message("user", probe.text.format(request=request)),))
    other = "no" if probe.tool_answer == "yes" else "yes"
    groups = tuple(tuple({engine.tokenize(v)[0] for v in (w, " " + w, w.capitalize(), " " + w.capitalize())})
                   for w in (probe.tool_answer, other))
    return engine.submit(tokens, SamplingParams(temperature=0.0, max_tokens=1, choices=groups))


def tool_share(weights: tuple[float, ...]) -> float:
    """The tool answer's share against the other's, from the choice's weights."""
    tool, other = weights
    return tool / max(tool + other, 1e-9)


async def needless(model: LocalModel, messages: Sequence[Message]) -> bool:
    """A call answering `messages` is needless: asked apart, the model says by both probes that no tool is
    needed. A question that cannot be asked now (the queue is full) lets the call go out."""
    request = request_to_check(messages)
    if request is None:
        return False
    try:
        tasks = [ask(model, p, request) for p in PROBES]  # submitted together: decoded in one batch
        finals = [await t.result() for t in tasks]
    except (Overloaded, EngineError):
        return False
    shares = [tool_share(f.choice_weights) for f in finals]
    if any(share >= p.least for share, p in zip(shares, PROBES)):
        return False
    log.info("general knowledge answers the request (a tool needed: %s)", ", ".join(f"{x:.2f}" for x in shares))
    return True
