"""The floor for an HTTP answer on this machine: the same server stack as edge-ai (uvicorn, uvloop,
httptools, FastAPI with a route taking the raw request, orjson) answering every chat completion
with a fixed body, no cache and no model. `cache_hits.py --floor` runs its clients against it beside edge-ai, so a hit's latency can be
read against what the stack alone costs here.

    .venv/bin/python scripts/bench/floor_server.py PORT
"""

from __future__ import annotations

import sys
import time

import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response
from fastapi import FastAPI



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


app = FastAPI()
app.add_api_route("/v1/chat/completions", chat, methods=["POST"])
app.add_api_route("/readyz", ready, methods=["GET"])

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
