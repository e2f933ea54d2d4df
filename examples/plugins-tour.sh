#!/usr/bin/env bash
# A tour of Kiln's plugins with the example config: list the types, inspect a component,
# and make single calls as a plugin author would.
set -euo pipefail
kiln="${1:-kiln}"
here="$(cd "$(dirname "$0")" && pwd)"
run() { echo; echo "\$ kiln $*"; "$kiln" --config "$here/kiln.toml" "$@"; }

run plugin list
run plugin call random-string describe | head -n 20
run plugin call random-string create -p '{"length": 16, "character_classes": [{"class": "digits", "min": 4}]}'
run plugin call test-resource create -p '{"value": "hello"}'
run plugin call test-resource create -p '{"action_wait_secs": {"create": 2}}'
run plugin call exponential-backoff decide \
    --params '{"initial_interval_ms": 500, "jitter": "none"}' \
    --failure '{"kind": "throttled", "status": 429, "retry_after_ms": 2000, "attempt": 1}'
echo
echo "\$ kiln plugin call test-resource create -p '{\"fail\": true}'   # a plugin error: exit code 1"
set +e
"$kiln" --config "$here/kiln.toml" plugin call test-resource create -p '{"fail": true}'
echo "exit code: $?"
