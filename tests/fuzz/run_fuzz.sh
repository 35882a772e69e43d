#!/usr/bin/env bash
# Runs every libFuzzer target in bin-fuzz/ (built by `make fuzz`) over its seed corpus in
# tests/fuzz/corpus/<target>/, then fuzzes it for SECONDS more (default 10), one target at
# a time. New inputs go to build-fuzz/corpus/<target>/, never into the committed seeds.
# Prints one line per target; exits non-zero on any crash, hang, leak or sanitizer report
# (libFuzzer writes the input to build-fuzz/crash-*).
# Usage: tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")/../.."
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls tests/fuzz/corpus))
failed=0
for target in "${targets[@]}"; do
    bin=bin-fuzz/fuzz_$target
    [ -x "$bin" ] || { echo "FAIL fuzz_$target: $bin not built (make fuzz)"; failed=1; continue; }
    work=build-fuzz/corpus/$target
    mkdir -p "$work"
    log=build-fuzz/fuzz_$target.log
    # -timeout: a single input taking 10 s is a hang; -rss_limit_mb bounds memory.
    if nice -n 19 "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix=build-fuzz/ -print_final_stats=1 \
        "$work" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "PASS fuzz_$target (${seconds}s, ${runs:-?} executions)"
    else
        failed=1
        echo "FAIL fuzz_$target (log: $log)"
        grep -m5 -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed 's/^/    /'
    fi
done
exit $failed
