"""The floor for an HTTP answer on this machine: the same server stack as edge-ai (uvicorn, uvloop,
httptools, edge-ai's router, Starlette requests and responses, orjson) answering every chat completion
with a fixed body, no cache and no model. `cache_hits.py --floor` runs its clients against it beside edge-ai, so a hit's latency can be
read against what the stack alone costs here.

    .venv/bin/python scripts/bench/floor_server.py PORT
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from edge_ai.router import Router  # noqa: E402


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    text = "Answer: " + body["messages"][-1]["content"]
    reply = {
        "id": "chatcmpl-floor", "object": "chat.completion", "created": int(time.time()), "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    return Response(orjson.dumps(reply), media_type="application/json", headers={"x-edge-source": "cache"})


async def ready(request: Request) -> Response:
    return Response(b'{"status":"ready"}', media_type="application/json")


def error_page(request: Request, status: int, detail: str) -> Response:
    return Response(detail, status_code=status)


app = Router([Route("/v1/chat/completions", chat, methods=["POST"]), Route("/readyz", ready)], error_page)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
