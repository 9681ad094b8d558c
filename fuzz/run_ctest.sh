#!/usr/bin/env bash
# The fuzz session CTest runs (fuzz/fuzz.cmake):
#   run_ctest.sh FUZZER_BINARY FUZZ_SOURCE_DIR
# 1. every input in fuzz/crashes/ runs; a listed open finding (KNOWN) must
#    still reproduce, everything else must pass;
# 2. a fuzz session of AUTHTRAIL_FUZZ_SECONDS (default 25) seconds starts
#    from a copy of fuzz/corpus/ in a temporary folder (the repo is never
#    written) and fails on any finding. Findings are copied to
#    ./fuzz-findings/ in the build folder.
set -euo pipefail
fuzzer="$1"
src="$2"
seconds="${AUTHTRAIL_FUZZ_SECONDS:-25}"
# libFuzzer reads 0 as "no limit".
if ! [ "$seconds" -ge 1 ] 2>/dev/null; then
  echo "FAIL: AUTHTRAIL_FUZZ_SECONDS must be a whole number >= 1" >&2
  exit 1
fi

if [ ! -x "$fuzzer" ]; then
  echo "FAIL: fuzzer binary $fuzzer is missing: the clang build of fuzz/" \
       "did not run (scripts/install-deps installs clang-14)" >&2
  exit 1
fi

known=$(grep -v '^#' "$src/crashes/KNOWN" | grep -v '^[[:space:]]*$' || true)
tolerate=$(echo "$known" | paste -sd, -)
work=$(mktemp -d "${TMPDIR:-/tmp}/authtrail-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/corpus" "$work/artifacts"

# 1. The committed crash inputs.
status=0
for input in "$src"/crashes/*; do
  name=$(basename "$input")
  [ "$name" = KNOWN ] && continue
  [ "$name" = README.md ] && continue
  finding=""
  for k in $known; do
    case "$name" in "$k"-*) finding="$k" ;; esac
  done
  if [ -n "$finding" ]; then
    if "$fuzzer" "$input" >"$work/one.log" 2>&1; then
      echo "FAIL: $name no longer reproduces finding '$finding': if it" \
           "is fixed, remove '$finding' from fuzz/crashes/KNOWN" >&2
      status=1
    elif ! grep -q "\[$finding\]" "$work/one.log"; then
      echo "FAIL: $name fails other than by finding '$finding':" >&2
      tail -40 "$work/one.log" >&2
      status=1
    else
      echo "known open finding '$finding' still reproduces: $name"
    fi
    if ! AUTHTRAIL_FUZZ_TOLERATE="$tolerate" "$fuzzer" "$input" \
        >"$work/one.log" 2>&1; then
      echo "FAIL: $name fails with its finding tolerated:" >&2
      tail -40 "$work/one.log" >&2
      status=1
    fi
  elif ! "$fuzzer" "$input" >"$work/one.log" 2>&1; then
    echo "FAIL: crash input $name fails again:" >&2
    tail -40 "$work/one.log" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] || exit 1

# 2. The fuzz session.
cp "$src"/corpus/* "$work/corpus/"
set +e
AUTHTRAIL_FUZZ_TOLERATE="$tolerate" "$fuzzer" \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -dict="$src/authtrail.dict" -print_final_stats=1 \
  -artifact_prefix="$work/artifacts/" "$work/corpus" >"$work/fuzz.log" 2>&1
rc=$?
set -e
grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::|known finding' "$work/fuzz.log" || true
if [ "$rc" -ne 0 ] || [ -n "$(ls -A "$work/artifacts")" ]; then
  echo "FAIL: the fuzzer found a problem (exit $rc):" >&2
  grep -v -E '^#[0-9]+ ' "$work/fuzz.log" | tail -80 >&2
  mkdir -p fuzz-findings
  cp "$work"/artifacts/* fuzz-findings/ 2>/dev/null || true
  echo "inputs kept in $PWD/fuzz-findings/; reproduce with:" \
       "$fuzzer FILE" >&2
  exit 1
fi
units=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/fuzz.log")
if [ -z "$units" ] || [ "$units" -lt 100 ]; then
  echo "FAIL: the fuzz session ran ${units:-no} inputs" >&2
  tail -40 "$work/fuzz.log" >&2
  exit 1
fi
echo "fuzz session: $units inputs in ${seconds}s, no finding"
