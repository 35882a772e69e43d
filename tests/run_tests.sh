#!/usr/bin/env bash
# Runs the suite against the binaries in $1 (bin or bin-san): every C test binary,
# then every end-to-end script tests/e2e_*.sh. Prints one line per test and a final
# "N passed, N failed, N skipped" line; exits non-zero when anything failed. A test that
# cannot run here (a missing optional tool) exits 77 and is reported as SKIP, with the
# reason it printed last.
set -u
bin=${1:-bin}
# Spinning OpenMP threads would take the cores from every other process (docs/RELIABILITY.md).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
cd "$(dirname "$0")/.."
passed=0
failed=0
skipped=0
failures=()

run_one() {
    local name=$1
    shift
    local log
    log=$(mktemp)
    local start=$SECONDS
    "$@" >"$log" 2>&1
    local rc=$?
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        printf 'PASS %-28s (%ds)\n' "$name" $((SECONDS - start))
    elif [ "$rc" -eq 77 ]; then
        skipped=$((skipped + 1))
        printf 'SKIP %-28s %s\n' "$name" "$(tail -1 "$log")"
    else
        failed=$((failed + 1))
        failures+=("$name")
        printf 'FAIL %-28s (%ds)\n' "$name" $((SECONDS - start))
        sed 's/^/    /' "$log" | tail -40
    fi
    rm -f "$log"
}

for test in "$bin"/test_*; do
    [ -x "$test" ] || continue
    run_one "$(basename "$test")" "$test"
done
for script in tests/e2e_*.sh; do
    run_one "$(basename "$script" .sh)" env DDPM="$bin/ddpm" bash "$script"
done

echo "${bin}: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ] || { echo "failed: ${failures[*]}"; exit 1; }
