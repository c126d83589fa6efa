"""How the model answers call_need's two questions, request by request (edge_ai/call_need.py).

    .venv/bin/python scripts/eval/call_need.py [scripts/eval/call_need.jsonl] [--model qwen-coder-1.5b]

Each line of the file: {"request": text, "needs_tool": bool}. Prints, per request, each probe's share for
"a tool is needed" and the verdict of the rule (needless where both shares are under their thresholds),
then each probe's range on both kinds, and the requests the rule gets wrong. A request naming a file is
never asked in production (call_need.request_to_check); here it is asked all the same, and marked.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from edge_ai.call_need import PROBES, ask, tool_share  # noqa: E402
from edge_ai.config import Settings  # noqa: E402
from edge_ai.edit_blocks import names_file  # noqa: E402
from edge_ai.runtime import Runtime  # noqa: E402


async def judge(model, rows: list[dict]) -> list[list[float]]:  # noqa: ANN001
    out = []
    for row in rows:
        tasks = [ask(model, p, row["request"]) for p in PROBES]
        out.append([tool_share((await t.result()).choice_weights) for t in tasks])
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("file", nargs="?", default=str(ROOT / "scripts" / "eval" / "call_need.jsonl"))
    ap.add_argument("--model", default=None)
    args = ap.parse_args()
    rows = [json.loads(line) for line in Path(args.file).read_text().splitlines() if line.strip()]
    runtime = Runtime(Settings.load(None, model=args.model, cache_dir=tempfile.mkdtemp(prefix="edge-eval-")))
    runtime.load()
    if runtime.error or runtime.policy is None:
        raise SystemExit(f"error: {runtime.error}")
    model = runtime.policy.models.default
    shares = asyncio.run(judge(model, rows))
    wrong = []
    heads = " ".join(f"{p.tool_answer:>5}?" for p in PROBES)  # the answer that says a tool is needed
    print(f"{'needs':>5}  {heads}  verdict   request")
    for row, got in zip(rows, shares):
        needless = all(s < p.least for s, p in zip(got, PROBES))
        named = names_file(row["request"])
        verdict = "needless" if needless else "needed"
        if needless == row["needs_tool"] and not named:
            wrong.append(row["request"])
        print(f"{'tool' if row['needs_tool'] else 'none':>5}  {' '.join(f'{s:6.2f}' for s in got)}  {verdict:8}  "
              f"{row['request'][:70]}{'  (names a file: not asked)' if named else ''}")
    for i, p in enumerate(PROBES):
        for kind in (True, False):
            xs = sorted(s[i] for r, s in zip(rows, shares) if r["needs_tool"] == kind and not names_file(r["request"]))
            if xs:
                print(f"probe {i + 1} (tool if {p.tool_answer!r} >= {p.least}), {'needs a tool' if kind else 'needs none'}: "
                      f"{xs[0]:.2f}-{xs[-1]:.2f}")
    asked = sum(not names_file(r["request"]) for r in rows)
    print(f"{model.name}: the rule gets {asked - len(wrong)} of {asked} asked requests right"
          + ("".join(f"\n  wrong: {w}" for w in wrong)))
    runtime.close()


if __name__ == "__main__":
    main()
