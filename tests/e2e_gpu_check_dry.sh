#!/usr/bin/env bash
# tools/gpu_check.sh runs on a lent GPU only, within 8 minutes of a 15-minute lease, so
# its flow must be right before it gets there. Without a GPU this checks:
# - its dry run (DRY_RUN=1) goes through every stage, prints each one's expected time and
#   a planned total within 480 s, with and without the fallback build on the device, and
#   ends with the comparison table;
# - a plan over 480 s is refused before anything runs;
# - tools/gpu_check_table.py: speed-ups, targets met or not, the memory and drift rows,
#   p50_ms preferred over ms_per_step, a missing run's reason;
# - tools/run_yardstick.py's gate: the peer writes READY after its warm-up and prints its
#   timed line only after GO, and tools/conv_step_time.py's sum quoted in docs/PERF.md
#   (both need python3 with torch and the yardstick; else not run).
source tests/lib_e2e.sh
BIN_DIR=$(dirname "$DDPM")
LIMIT=480
HEADER='| what | batch | precision | ddpm.c p50 ms | peer p50 ms | ratio | target | met? |'

dry_run() {   # dry_run LOG [VAR=value...]: the dry run, its output in LOG
    local log=$1
    shift
    env DRY_RUN=1 BIN="$BIN_DIR" OUT= "$@" bash tools/gpu_check.sh >"$log" 2>&1 ||
        fail "dry run $*: exit status $?: $(tail -5 "$log")"
}
check_plan() {   # check_plan LOG WHAT: budget within the limit, stages announced, table last
    local log=$1 what=$2 total stated listed
    total=$(sed -n 's/^total budget: \([0-9]*\) s.*/\1/p' "$log")
    [ -n "$total" ] || fail "$what: no 'total budget' line"
    [ "$total" -le "$LIMIT" ] || fail "$what: planned $total s, over $LIMIT s"
    ok
    # the stated total is the sum of the budgets printed before each stage
    stated=$(sed -n 's/^---- .* (expected <= \([0-9]*\) s;.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
    [ "$stated" -le "$total" ] || fail "$what: stages announce $stated s, the plan says $total s"
    ok
    for stage in test_ops suite probe_bf16 ours_train_b128_tf32 peer_train_b128_bf16_compile \
                 peer_sample_b1_tf32_reduce_overhead; do
        grep -q "^---- $stage (expected <= [0-9]* s" "$log" || fail "$what: stage $stage not announced"
    done
    ok
    listed=$(grep -c 'would start: nice -n 10 python3 tools/run_yardstick.py' "$log")
    [ "$listed" -eq 6 ] || fail "$what: $listed peer processes started, expected 6"
    ok
    [ "$(grep -n '^| what |' "$log" | tail -1 | cut -d: -f1)" -gt \
      "$(grep -n '^==== status of every stage' "$log" | cut -d: -f1)" ] ||
        fail "$what: the table is not printed last"
    grep -qxF "$HEADER" "$log" || fail "$what: table header missing"
    tail -n 1 "$log" | grep -q '^| ours_train_b128_tf32, repeated last |' ||
        fail "$what: the output does not end with the table's last row: $(tail -n 1 "$log")"
    ok
}

dry_run "$WORK/dry.log"
check_plan "$WORK/dry.log" "carried binaries"
grep -q "drift check: yes" "$WORK/dry.log" || fail "drift check not planned"
ok
ls "$ROOT"/docs/perf-logs/*dry-run* >/dev/null 2>&1 && fail "a dry run wrote into docs/perf-logs"
ok

dry_run "$WORK/build.log" DRY_RUN_LOADS=0
check_plan "$WORK/build.log" "fallback build"
grep -q "^---- build (expected <= [0-9]* s" "$WORK/build.log" || fail "fallback build not planned"
ok

# a plan over the limit stops before any stage
out=$(env DRY_RUN=1 BIN="$BIN_DIR" B_OPS=400 bash tools/gpu_check.sh 2>&1)
[ $? -eq 2 ] || fail "a ${LIMIT}+ s plan was not refused: $(tail -3 <<<"$out")"
grep -q "over $LIMIT s" <<<"$out" || fail "refusal does not say why"
grep -q '^---- test_ops' <<<"$out" && fail "a stage ran after the refusal"
ok

# the table from known lines
cat >"$WORK/raw.jsonl" <<'EOF'
{"run": "ours_train_b128_tf32", "engine": "ddpm.c", "batch": 128, "precision": "tf32", "p10_ms": 39.0, "p50_ms": 40.0, "p90_ms": 41.0, "ms_per_step": 40.5, "ops_per_step": 1100, "host_enqueue_ms": 18.5, "category_ms": {"conv_fwd": 12.0}, "peak_mem_gib": 6.0}
{"run": "peer_train_b128_tf32_compile", "peer": "pytorch", "batch": 128, "ms_per_step": 50.0, "gflop_per_img": 37.331}
{"run": "ours_train_b8_tf32", "engine": "ddpm.c", "batch": 8, "ms_per_step": 20.0}
{"run": "peer_train_b8_tf32_compile", "peer": "pytorch", "batch": 8, "ms_per_step": 30.0}
{"run": "peer_train_b128_tf32_eager", "peer": "pytorch", "batch": 128, "ms_per_step": 72.0, "peak_mem_gib": 9.0}
{"run": "ours_drift_repeat", "repeat_of": "ours_train_b128_tf32", "p50_ms": 44.0}
not json
EOF
printf 'ours_sample_b1_tf32\tTIMEOUT after 25 s\n' >"$WORK/status.tsv"
python3 tools/gpu_check_table.py "$WORK/raw.jsonl" "$WORK/status.tsv" >"$WORK/table.txt" 2>&1 ||
    fail "table: exit status $?"
row() { grep -F "| $1 |" "$WORK/table.txt" || fail "no row '$1': $(cat "$WORK/table.txt")"; }
[ "$(row 'train | 128 | tf32')" = "| train | 128 | tf32 | 40.00 | 50.00 | 1.25x | >= 1.1x torch.compile tf32 | yes |" ] ||
    fail "batch-128 row (p50_ms over ms_per_step, 1.25x meets 1.1x): $(row 'train | 128 | tf32')"
ok
[ "$(row 'train | 8 | tf32')" = "| train | 8 | tf32 | 20.00 | 30.00 | 1.50x | >= 2x torch.compile | no |" ] ||
    fail "batch-8 row (ms_per_step fallback, 1.5x misses 2x): $(row 'train | 8 | tf32')"
ok
row 'sample step | 1 | tf32' | grep -qF '| TIMEOUT after 25 s | not run | - |' ||
    fail "a missing run should give its reason: $(row 'sample step | 1 | tf32')"
ok
[ "$(row 'peak memory | 128 | tf32')" = "| peak memory | 128 | tf32 | 6.00 GiB | 9.00 GiB | 0.67 | <= PyTorch eager's | yes |" ] ||
    fail "memory row: $(row 'peak memory | 128 | tf32')"
ok
row 'ours_train_b128_tf32, repeated last' | grep -qF '| 44.00 | first: 40.00 | +10.0% | drift within 3% | no |' ||
    fail "drift row: $(row 'ours_train_b128_tf32, repeated last')"
ok
grep -qF 'ours_train_b128_tf32: p10/p50/p90 39.00/40.00/41.00 ms; 1100 kernels/step; host enqueue 18.50 ms; categories conv_fwd 12.00' \
    "$WORK/table.txt" || fail "per-run notes: $(cat "$WORK/table.txt")"
grep -qF 'MFU ours_train_b128_tf32: 119.5 TFLOP/s' "$WORK/table.txt" || fail "MFU line"
ok

# the peer's gate, on the CPU with a tiny config
YARD=$ROOT/../shared/yardstick
[ -f "$ROOT/.yardstick/bench_torch.py" ] && YARD=$ROOT/.yardstick
if [ -f "$YARD/bench_torch.py" ] && "$PY" -c 'import torch' 2>/dev/null; then
    YARDSTICK_DIR=$YARD DDPM_PEER_READY=$WORK/ready DDPM_PEER_GO=$WORK/go DDPM_PEER_GATE_S=60 \
        OMP_NUM_THREADS=1 "$PY" "$ROOT/tools/run_yardstick.py" train --config tiny --batch 2 \
        --device cpu --threads 1 --warmup 1 --iters 2 >"$WORK/peer.out" 2>&1 &
    peer=$!
    for _ in $(seq 120); do [ -f "$WORK/ready" ] && break; sleep 0.5; done
    [ -f "$WORK/ready" ] || fail "the peer wrote no READY: $(cat "$WORK/peer.out")"
    sleep 1
    grep -q '^{' "$WORK/peer.out" && fail "the peer timed before GO"
    kill -0 "$peer" 2>/dev/null || fail "the peer did not wait at its gate"
    ok
    touch "$WORK/go"
    wait "$peer" || fail "the peer failed after GO: $(cat "$WORK/peer.out")"
    grep -q '"ms_per_step"' "$WORK/peer.out" || fail "no timed line after GO"
    ok
    # docs/PERF.md's 39.90 ms of convolutions per step, from the kept search log
    total=$(cd "$WORK" && YARDSTICK_DIR=$YARD "$PY" "$ROOT/tools/conv_step_time.py" \
        "$ROOT/docs/perf-logs/2026-11-22-H100-conv-choices-tf32.log" | sed -n 's/^total *//p')
    [ "$total" = "39.90 ms" ] || fail "conv_step_time.py: total '$total', docs/PERF.md says 39.90 ms"
    ok
else
    echo "gate check not run: no yardstick at $YARD or no torch in $PY"
fi
finish
