"""Same as `edge-ai warm`: python scripts/warmup.py INPUT.jsonl... [options] (see --help)."""

import sys

from edge_ai.cli import app

if __name__ == "__main__":
    sys.exit(app(["warm", *sys.argv[1:]]))
