#!/usr/bin/env bash
# One answer of 32 tokens (SmolLM2, cache off) with the cores free and with another process keeping one
# core busy, at decode_nice 0 and 10. Usage: scripts/bench/priority_under_load.sh [PORT]
set -u
cd "$(dirname "$0")/../.."
port=${1:-8093}
for nice in 0 10; do
  EDGE_AI_DECODE_NICE=$nice .venv/bin/edge-ai serve --port "$port" --cache-dir "$(mktemp -d)" > /dev/null 2>&1 &
  srv=$!
  for _ in $(seq 120); do curl -sf "localhost:$port/readyz" > /dev/null && break; sleep 1; done
  for busy in no yes; do
    if [ "$busy" = yes ]; then ( while :; do :; done ) & hog=$!; sleep 0.5; fi
    start=$(date +%s.%N)
    timeout 300 curl -s "localhost:$port/v1/chat/completions" -H 'x-edge-cache: off' -H 'content-type: application/json' \
      -d '{"model":"m","max_tokens":32,"messages":[{"role":"user","content":"Write a long story about a dragon."}]}' > /dev/null
    echo "decode_nice=$nice one core busy=$busy: $(echo "$(date +%s.%N) - $start" | bc) s"
    if [ "$busy" = yes ]; then kill "$hog"; fi
  done
  kill "$srv"; wait "$srv" 2>/dev/null
done
