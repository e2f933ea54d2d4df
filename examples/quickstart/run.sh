#!/usr/bin/env bash
# The quickstart: validate the template, create the stack (live progress, then outputs), look
# at it, preview and apply an update, check it, and delete it. Uses the embedded engine and the default SQLite database
# (~/.local/share/kiln/kiln.db; set KILN_DATABASE_URL to use another).
set -euo pipefail
kiln="${1:-kiln}"
here="$(cd "$(dirname "$0")" && pwd)"
run() { echo; echo "\$ kiln $*"; "$kiln" "$@"; }

# A stack left by an interrupted earlier run would make the create fail: remove it first.
"$kiln" stack delete quickstart >/dev/null 2>&1 || true

run validate -t "$here/stack.yaml"
run stack create quickstart -t "$here/stack.yaml" -P environment=staging
run stack show quickstart
run resource list quickstart
run stack outputs quickstart --format json
# Change a parameter: see what would happen, then do it (the seed is replaced, the workers are
# updated in place, the chain is left alone).
run stack preview quickstart --existing -P environment=prod -P name_length=16
run stack update quickstart --existing -P environment=prod -P name_length=16
run stack check quickstart
run stack delete quickstart
