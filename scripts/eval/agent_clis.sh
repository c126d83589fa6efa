#!/usr/bin/env bash
# The agents issue's three tasks, run by the real CLIs against a running edge-ai (no cloud).
# Needs `npm install @anthropic-ai/claude-code @openai/codex` in $AGENTS (a scratch directory).
# Usage: [SET=2] AGENTS=/tmp/agents scripts/eval/agent_clis.sh http://127.0.0.1:8088 [claude|codex|both]
set -u
url=${1:-http://127.0.0.1:8088}; which=${2:-both}
bin=${AGENTS:-/tmp/agents}/node_modules/.bin
# SET=2: three more of the same kinds (a fact read from a file, a new file, a one-line fix), written after
# the changes the first set taught, to see whether they carry over.
if [ "${SET:-1}" = 2 ]; then
  tasks=("Which port does settings.ini set for the server? Answer with the number only."
         "Create a shell script hello.sh that prints hi."
         "In util.py the function double() returns x * 3. Fix it so it returns x * 2.")
else
  tasks=("What is the code word written in inventory.txt? Answer with the code word only."
         'Create a file greet.py that prints "hello edge".'
         "The function add() in calc.py is wrong: it subtracts. Fix it so it adds.")
fi
setup() {
  local d; d=$(mktemp -d); printf 'inventory\ncode word: PELICAN\n' > "$d/inventory.txt"
  printf 'def add(a, b):\n    return a - b\n' > "$d/calc.py"
  printf '[server]\nhost = 0.0.0.0\nport = 8731\n' > "$d/settings.ini"
  printf 'def double(x):\n    return x * 3\n' > "$d/util.py"; echo "$d"
}
check() {  # $1 task index, $2 directory, $3 the agent's output
  # the agent's final answer: Codex prints it again after "tokens used" and the count (the commands' output
  # comes before it, and must not count as an answer); Claude Code prints only it
  local final; final=$(awk '/^tokens used$/{buf=""; skip=1; next} skip{skip=0; next} {buf=buf $0 "\n"} END{printf "%s", buf}' <<< "$3")
  case ${SET:-1}$1 in
    10) grep -qi pelican <<< "$final" ;;
    11) [ -f "$2/greet.py" ] && [ "$(cd "$2" && timeout 10 python3 greet.py 2>/dev/null)" = "hello edge" ] ;;
    12) (cd "$2" && timeout 10 python3 -c 'from calc import add; assert add(2, 3) == 5') 2>/dev/null ;;
    20) grep -q 8731 <<< "$final" ;;
    21) [ -f "$2/hello.sh" ] && [ "$(cd "$2" && timeout 10 bash hello.sh 2>/dev/null)" = "hi" ] ;;
    22) (cd "$2" && timeout 10 python3 -c 'from util import double; assert double(4) == 8') 2>/dev/null ;;
  esac
}
run() {  # $1 agent
  for i in 0 1 2; do
    d=$(setup); start=$(date +%s)
    if [ "$1" = claude ]; then
      out=$(cd "$d" && ANTHROPIC_BASE_URL=$url ANTHROPIC_API_KEY=unused DISABLE_TELEMETRY=1 \
            timeout 900 "$bin/claude" -p "${tasks[$i]}" --allowedTools Read Write Edit 2>&1)
    else
      home=$(mktemp -d); mkdir -p "$home/.codex"
      printf 'model = "local"\nmodel_provider = "edge"\n[model_providers.edge]\nname = "edge"\nbase_url = "%s/v1"\nwire_api = "responses"\nenv_key = "EDGE_KEY"\n' "$url" > "$home/.codex/config.toml"
      out=$(cd "$d" && HOME=$home CODEX_HOME=$home/.codex EDGE_KEY=unused timeout 900 "$bin/codex" exec --skip-git-repo-check \
            --sandbox workspace-write "${tasks[$i]}" 2>&1)
    fi
    if check "$i" "$d" "$out"; then ok=done; else ok=FAILED; fi
    echo "$1 task $((i + 1)): $ok in $(( $(date +%s) - start )) s"
    echo "$out" | tail -5 | sed 's/^/    /'
  done
}
[ "$which" = codex ] || run claude
[ "$which" = claude ] || run codex
