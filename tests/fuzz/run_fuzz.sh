#!/usr/bin/env bash
# Runs every libFuzzer target in bin-fuzz/ (built by `make fuzz`) over its seed corpus in
# tests/fuzz/corpus/<target>/, then fuzzes it for SECONDS more (default 10), as many targets
# at a time as there are cores (FUZZ_JOBS). New inputs go to build-fuzz/corpus/<target>/, never into the committed seeds.
# Prints one line per target; exits non-zero on any crash, hang, leak or sanitizer report
# (libFuzzer writes the input to build-fuzz/crash-*).
# Usage: tests/fuzz/run_fuzz.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")/../.."
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=($(ls tests/fuzz/corpus))
# One target: its result line into build-fuzz/result_<target>, "PASS ..." or "FAIL ...".
run_target() {
    local target=$1 bin=bin-fuzz/fuzz_$1 work=build-fuzz/corpus/$1 log=build-fuzz/fuzz_$1.log
    local result=build-fuzz/result_$1
    if [ ! -x "$bin" ]; then
        echo "FAIL fuzz_$target: $bin not built (make fuzz)" >"$result"
        return
    fi
    mkdir -p "$work"
    # -timeout: a single input taking 10 s is a hang; -rss_limit_mb bounds memory.
    if nice -n 19 "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix=build-fuzz/ -print_final_stats=1 \
        "$work" "tests/fuzz/corpus/$target" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        echo "PASS fuzz_$target (${seconds}s, ${runs:-?} executions)" >"$result"
    else
        { echo "FAIL fuzz_$target (log: $log)"
          grep -m5 -E 'ERROR|runtime error|SUMMARY|Test unit written' "$log" | sed 's/^/    /'
        } >"$result"
    fi
}

# Each libFuzzer process uses one core: run as many targets at once as there are cores.
mkdir -p build-fuzz
parallel=${FUZZ_JOBS:-$(nproc)}
for target in "${targets[@]}"; do
    rm -f "build-fuzz/result_$target"
    run_target "$target" &
    while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do wait -n; done
done
wait
failed=0
for target in "${targets[@]}"; do
    cat "build-fuzz/result_$target"
    grep -q '^PASS' "build-fuzz/result_$target" || failed=1
done
exit $failed
