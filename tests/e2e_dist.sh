#!/usr/bin/env bash
# Data-parallel training on the CPU backend over MPI (mpirun -np 2 --oversubscribe):
#   - 2 ranks at batch B/2 each reach the weights of 1 process at batch B after 12 steps (1e-5);
#   - buckets of any size give the same bits as one bucket at the end;
#   - rank 0 is found at MASTER_ADDR (torchrun's and srun's way) as well as over MPI;
#   - a 2-rank checkpoint resumes bit-identically on 2 ranks, and on 1 rank to 1e-5;
#   - sampling shared over 2 ranks gives the images of 1 process;
#   - SIGTERM on one rank stops both after the same step, with a checkpoint;
#   - a rank killed mid-run: the run ends within the deadline, naming rank 1, and the
#     last checkpoint loads;
#   - inconsistent launcher variables and a CPU world without MPI are clear errors.
source tests/lib_e2e.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
# LeakSanitizer reports Open MPI's own allocations at exit: not this program's leaks.
[ -n "${DDPM_SANITIZE:-}" ] && export ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0
command -v mpirun >/dev/null || fail "mpirun not found: install openmpi-bin"
args=(--config "$ROOT/configs/tiny" --device cpu batch_size=8 data_limit=64 dropout=0.1
      log_every=1 sample_n=0 threads=1)

# run DIR RANKS ARGS...: a training run in $WORK/DIR on 1 (no launcher) or more ranks
run() {
    local dir=$1 ranks=$2
    shift 2
    mkdir -p "$WORK/$dir"
    if [ "$ranks" -eq 1 ]; then
        (cd "$WORK/$dir" && "$DDPM" train "${args[@]}" out_dir=run "$@")
    else
        (cd "$WORK/$dir" && timeout 300 mpirun -np "$ranks" --oversubscribe "$DDPM" train \
            "${args[@]}" out_dir=run "$@")
    fi
}

# close A B: the weights and EMA of two checkpoints agree to 1e-5 relative (norm-wise)
close() {
    "$PY" - "$1" "$2" <<'PY'
import sys
import numpy as np
sys.path.insert(0, "tools")
import st_io
a, b = (st_io.read(p)[0] for p in sys.argv[1:3])
weights = [k for k in a if not k.startswith(("ema.", "adam_"))]
ema = [k for k in a if k.startswith("ema.")]
for name, keys in (("weights", weights), ("EMA", ema)):
    x = np.concatenate([a[k].ravel() for k in keys]).astype(np.float64)
    y = np.concatenate([b[k].ravel() for k in keys]).astype(np.float64)
    rel = np.linalg.norm(x - y) / np.linalg.norm(x)
    print(f"{name}: relative difference {rel:.2e}, largest {np.abs(x - y).max():.2e}")
    assert len(keys) > 100 and rel < 1e-5, (name, rel)
PY
}

# same_tensors A B: every tensor of two checkpoints equal bit for bit (the metadata
# holds the config, which may differ in keys that must not matter, like bucket_mb)
same_tensors() {
    "$PY" - "$1" "$2" <<'PY'
import sys
sys.path.insert(0, "tools")
import st_io
a, b = (st_io.read(p)[0] for p in sys.argv[1:3])
assert a.keys() == b.keys()
differ = [k for k in a if a[k].tobytes() != b[k].tobytes()]
assert not differ, differ[:5]
PY
}

run one 1 steps=12 2>"$WORK/one.log" || fail "1-process run: $(tail -3 "$WORK/one.log")"
run two 2 steps=12 2>"$WORK/two.log" || fail "2-rank run: $(tail -3 "$WORK/two.log")"
grep -q "data parallel: 2 ranks (Open MPI) x 4 samples per step" "$WORK/two.log" ||
    fail "the 2-rank run did not say how it splits the batch: $(head -5 "$WORK/two.log")"
close "$WORK/one/run/ckpt_00000012.safetensors" "$WORK/two/run/ckpt_00000012.safetensors" ||
    fail "2 ranks at batch 4 each differ from 1 process at batch 8"
ok
"$PY" - "$WORK/one/run/log.csv" "$WORK/two/run/log.csv" <<'PY' || fail "logged losses differ"
import csv, sys
one, two = ([float(r["loss"]) for r in csv.DictReader(open(p))] for p in sys.argv[1:3])
assert len(one) == len(two) == 12, (len(one), len(two))
worst = max(abs(a - b) / abs(a) for a, b in zip(one, two))
assert worst < 1e-4, worst
PY
ok

# the control connection at MASTER_ADDR:MASTER_PORT+1, as under torchrun and srun
(cd "$WORK" && mkdir -p master && cd master &&
 timeout 120 mpirun -np 2 --oversubscribe -x MASTER_ADDR=127.0.0.1 -x MASTER_PORT=29733 "$DDPM" \
     train "${args[@]}" out_dir=run steps=12 2>"$WORK/master.log") ||
    fail "2 ranks meeting at MASTER_ADDR: $(tail -3 "$WORK/master.log")"
same_tensors "$WORK/two/run/ckpt_00000012.safetensors" "$WORK/master/run/ckpt_00000012.safetensors" ||
    fail "the run that met at MASTER_ADDR differs"
ok

run buckets 2 steps=12 bucket_mb=0.05 2>"$WORK/buckets.log" || fail "small-bucket run"
same_tensors "$WORK/two/run/ckpt_00000012.safetensors" "$WORK/buckets/run/ckpt_00000012.safetensors" ||
    fail "14 buckets during backward differ from one bucket at the end"
ok

run resumed 2 steps=6 2>/dev/null || fail "6-step 2-rank run"
run resumed 2 steps=12 --resume 2>"$WORK/resumed.log" || fail "resumed 2-rank run"
grep -q "resumed from run/ckpt_00000006.safetensors at step 6" "$WORK/resumed.log" ||
    fail "the 2-rank run did not resume: $(head -5 "$WORK/resumed.log")"
cmp "$WORK/two/run/ckpt_00000012.safetensors" "$WORK/resumed/run/ckpt_00000012.safetensors" ||
    fail "a resumed 2-rank run differs from the straight one"
ok
mkdir -p "$WORK/regrown/run"
cp "$WORK/resumed/run/ckpt_00000006.safetensors" "$WORK/regrown/run/"
run regrown 1 steps=12 --resume 2>/dev/null || fail "resuming a 2-rank checkpoint on 1 process"
close "$WORK/two/run/ckpt_00000012.safetensors" "$WORK/regrown/run/ckpt_00000012.safetensors" ||
    fail "a 2-rank checkpoint resumed on 1 process drifts"
ok

# sampling shared over 2 ranks: the images one process makes with the same batch. Each
# process runs one thread: a GEMM's last bit depends on OpenBLAS's thread count, and a
# pixel next to a rounding step of the uint8 image then moves by one.
ckpt="$WORK/two/run/ckpt_00000012.safetensors"
sample=(sample --ckpt "$ckpt" --device cpu --n 5 --batch 2 --seed 3 --sampler ddim --steps ddim4)
OMP_NUM_THREADS=1 "$DDPM" "${sample[@]}" --out "$WORK/s1" 2>/dev/null || fail "1-process sampling"
timeout 120 mpirun -np 2 --oversubscribe -x OMP_NUM_THREADS=1 "$DDPM" "${sample[@]}" \
    --out "$WORK/s2" 2>"$WORK/s2.log" || fail "2-rank sampling: $(tail -3 "$WORK/s2.log")"
"$PY" - "$WORK/s1/samples.npz" "$WORK/s2/samples.npz" <<'PY' || fail "2-rank samples differ"
import sys
import numpy as np
a, b = (np.load(p)["arr_0"] for p in sys.argv[1:3])
assert a.shape == (5, 32, 32, 1) and np.array_equal(a, b), (a.shape, b.shape)
PY
[ -z "$(ls "$WORK/s2"/part-* 2>/dev/null)" ] || fail "the ranks' part files were left behind"
ok

# rank_pid DIR RANK: the pid of that rank of the run started in $WORK/DIR
rank_pid() {
    local pid
    for pid in $(pgrep -f "out_dir=run"); do
        [ "$(readlink "/proc/$pid/cwd")" = "$WORK/$1" ] || continue
        tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" &&
            echo "$pid" && return 0
    done
    return 1
}

# wait_for FILE: up to 60 s
wait_for() {
    for _ in $(seq 600); do [ -e "$1" ] && return 0; sleep 0.1; done
    return 1
}

run term 2 steps=100000 ckpt_every=3 2>"$WORK/term.log" &
launcher=$!
wait_for "$WORK/term/run/ckpt_00000003.safetensors" || fail "the SIGTERM run wrote no checkpoint"
kill -TERM "$(rank_pid term 1)" || fail "no rank 1 to signal"
wait "$launcher" || fail "SIGTERM on rank 1: exit status $?: $(tail -5 "$WORK/term.log")"
stop=$(sed -n 's/^stopping at step \([0-9]*\) on a signal$/\1/p' "$WORK/term.log")
[ -n "$stop" ] || fail "rank 0 did not report the agreed stop: $(tail -5 "$WORK/term.log")"
[ -f "$WORK/term/run/ckpt_$(printf %08d "$stop").safetensors" ] ||
    fail "no checkpoint at the agreed step $stop"
ok

run kill 2 steps=100000 ckpt_every=3 dist_timeout=20 2>"$WORK/kill.log" &
launcher=$!
wait_for "$WORK/kill/run/ckpt_00000006.safetensors" || fail "the kill run wrote no checkpoint"
started=$SECONDS
kill -KILL "$(rank_pid kill 1)" || fail "no rank 1 to kill"
wait "$launcher" && fail "the run went on without rank 1"
[ $((SECONDS - started)) -le 30 ] || fail "the ranks took $((SECONDS - started)) s to stop"
grep -q "rank 1" "$WORK/kill.log" || fail "the failed rank is not named: $(tail -5 "$WORK/kill.log")"
last=$(ls "$WORK/kill/run"/ckpt_*.safetensors | tail -1)
"$DDPM" sample --ckpt "$last" --n 1 --sampler ddim --steps ddim2 --out "$WORK/kill_sample" \
    --device cpu 2>/dev/null || fail "the last checkpoint ($last) does not load"
ok

expect_error "rank beyond the world" "RANK=3 is not below WORLD_SIZE=2" \
    env RANK=3 WORLD_SIZE=2 "$DDPM" train "${args[@]}" steps=1 out_dir="$WORK/bad"
expect_error "a non-number rank" "SLURM_PROCID=\"x\" is not a rank or a size" \
    env SLURM_PROCID=x SLURM_STEP_NUM_TASKS=2 "$DDPM" train "${args[@]}" steps=1 out_dir="$WORK/bad"
expect_error "CPU ranks without mpirun" "the CPU backend averages gradients over MPI" \
    env RANK=0 WORLD_SIZE=2 "$DDPM" train "${args[@]}" steps=1 out_dir="$WORK/bad"
expect_error "a batch that does not split" "does not split evenly over 3 ranks" \
    timeout 120 mpirun -np 3 --oversubscribe "$DDPM" train "${args[@]}" steps=1 out_dir="$WORK/bad"
finish
