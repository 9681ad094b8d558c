#!/usr/bin/env bash
# Runs the Node.js client test (client.test.js) against the real authtraild:
# copies the test and its locked package files into a work folder, installs
# them there with `npm ci` (the npm registry is needed), and runs
# `node --test`. Prints "node_client: N passed, N failed" at the end and
# exits non-zero on any failure. A missing tool is a failure, never a skip.
#
#   run_tests.sh AUTHTRAILD PROTO_DIR [WORK_DIR]
#
# WORK_DIR (default: a new temporary folder, removed afterwards) is where
# node_modules goes; CTest passes one in the build tree.
set -euo pipefail

NAME=node_client
fail() {
  echo "$NAME: FAILED: $*" >&2
  echo "$NAME: 0 passed, 1 failed"
  exit 2
}

[ $# -ge 2 ] || fail "usage: $0 AUTHTRAILD PROTO_DIR [WORK_DIR]"
HERE="$(cd "$(dirname "$0")" && pwd)"
AUTHTRAILD="$(realpath "$1")"
PROTO_DIR="$(realpath "$2")"
CLIENT_PROTOS="$(realpath "$HERE/../protos")"

[ -x "$AUTHTRAILD" ] || fail "authtraild binary $1 does not exist or is not executable"
[ -f "$PROTO_DIR/authtrail/v1/ingest.proto" ] || fail "$2 does not hold authtrail/v1/ingest.proto"
[ -f "$CLIENT_PROTOS/grpc_health/v1/health.proto" ] || fail "$CLIENT_PROTOS lacks grpc_health/v1/health.proto"
command -v node >/dev/null || fail "node not found on PATH: install Node.js (18 or later) and npm"
command -v npm >/dev/null || fail "npm not found on PATH: install npm"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 18 ] || fail "node $(node --version) is too old: the test runner needs 18 or later"

if [ $# -ge 3 ]; then
  WORK="$3"
  mkdir -p "$WORK"
else
  WORK="$(mktemp -d -t authtrail-node-client-XXXXXX)"
  trap 'rm -rf "$WORK"' EXIT
fi
cp "$HERE/package.json" "$HERE/package-lock.json" "$HERE/client.test.js" "$WORK/"
cd "$WORK"

echo "$NAME: node $(node --version), npm $(npm --version), in $WORK" >&2
npm ci --no-audit --no-fund --loglevel=error \
  || fail "npm ci failed (it needs the npm registry)"

export AUTHTRAILD_PATH="$AUTHTRAILD"
export AUTHTRAIL_PROTO_DIR="$PROTO_DIR"
export AUTHTRAIL_CLIENT_PROTOS="$CLIENT_PROTOS"
status=0
node --test --test-reporter=tap client.test.js | tee test-output.tap || status=$?

# Node's TAP summary ("# pass N", "# fail N", ...), restated on one line.
count() { sed -n "s/^# $1 \([0-9]*\)$/\1/p" test-output.tap | tail -1; }
tests="$(count tests)"; pass="$(count pass)"; failed="$(count fail)"
skipped="$(count skipped)"; todo="$(count todo)"
cancelled="$(count cancelled)"
if [ -z "$tests" ] || [ -z "$pass" ] || [ -z "$failed" ]; then
  fail "node --test printed no summary (exit code $status)"
fi
bad=$(( failed + ${cancelled:-0} ))
if [ "${skipped:-0}" -ne 0 ] || [ "${todo:-0}" -ne 0 ]; then
  echo "$NAME: ${skipped:-0} skipped and ${todo:-0} todo tests: nothing may be skipped" >&2
  bad=$(( bad + ${skipped:-0} + ${todo:-0} ))
fi
[ "$tests" -gt 0 ] || { echo "$NAME: no test ran" >&2; bad=$(( bad + 1 )); }
echo "$NAME: $pass passed, $bad failed"
if [ "$status" -ne 0 ] || [ "$bad" -ne 0 ]; then
  exit 1
fi
