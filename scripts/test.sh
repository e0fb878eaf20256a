#!/usr/bin/env bash
# `make test`'s pytest: the end-to-end tests (-m e2e) and all the others as two runs side by side.
#
# The end-to-end tests mostly wait on pods of the node, the others mostly keep one core busy: one after the other
# they left a 2-core machine idle about 60% of the time (a 25-minute suite). Side by side, the e2e output is held
# in a log and printed whole when both runs are done; the exit status fails when either run fails.
# The others run in PREFOPS_TEST_WORKERS pytest-xdist workers (2 by default), a whole file per worker so that a
# module's fixtures (a trained checkpoint, a started server) are built once: many of them wait on timeouts, retries
# and servers, and one process left the second core idle.
# With arguments (PYTEST_ARGS: a file, -k, -m), one plain run: what they select decides.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

if [ "$#" -gt 0 ]; then
  exec "$PY" -m pytest "$@"
fi

log=$(mktemp -t prefops-e2e.XXXXXX)
"$PY" -m pytest -m e2e >"$log" 2>&1 &
e2e=$!
# pytest tears its fixtures down (the node, by PID) on SIGINT, not on SIGTERM
trap 'kill -INT "$e2e" 2>/dev/null; wait "$e2e"; exit 130' INT TERM

"$PY" -m pytest -m "not e2e" -n "${PREFOPS_TEST_WORKERS:-2}" --dist loadfile
rest=$?
wait "$e2e"
e2e_rc=$?

echo
echo "======== the end-to-end tests, run beside the others (pytest -m e2e; log: $log) ========"
cat "$log"
echo "pytest -m 'not e2e': exit $rest; pytest -m e2e: exit $e2e_rc"
[ "$rest" -eq 0 ] && [ "$e2e_rc" -eq 0 ]
