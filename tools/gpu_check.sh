#!/usr/bin/env bash
# The device check of the CUDA backend: one call of at most 8 minutes (480 s) of command
# time that ends with a table of ddpm.c against the PyTorch peer. A lent GPU comes with
# 15 minutes of device time in all, start-up included, and one command may run 10 minutes,
# so the check is sized by construction: every stage runs under `timeout` with its budget
# printed before it starts, the budgets of the planned stages are summed and checked
# against 480 s before anything runs, and a stage whose budget no longer fits the time
# left is skipped and reported.
#
#   bash tools/gpu_check.sh --prepare   # HERE (CPU machine): builds bin-gpu/, fills
#                                       # .gpudeps/ .yardstick/ .gpucache/, prints the call
#   bash tools/gpu_check.sh             # THERE, as the device call --prepare printed
#   DRY_RUN=1 bash tools/gpu_check.sh   # anywhere: the plan, the budgets and the table,
#                                       # each GPU command echoed instead of run
#
# Stages after the environment (STAGES, default "ops suite bench"):
#   ops    bin-gpu/test_ops: every op case on the GPU against the CPU backend
#   suite  e2e_resume on the GPU, and the first training steps on CPU and GPU compared
#   bench  ours and the peer side by side: train at batch 128 in bf16 (when the build has
#          mixed_precision=bf16; probed with one step of configs/tiny) and TF32, train at
#          batch 8, one sampling step at batch 256 and 1 (peer with reduce-overhead), the
#          peer in eager mode at batch 128 for peak memory, then our first benchmark again
#          to catch drift
#
# Overlap of the peer's compile with our tests. torch.compile takes minutes per process,
# so the six peer processes start in the background (under nice) right after the
# environment stage, while our correctness tests run. tools/run_yardstick.py holds each
# one at a gate: it runs its warm-up steps (the compile, and reduce-overhead's graph
# capture), writes a READY file and waits for a GO file. The timed phase starts only once
# every peer is READY (or given up on: the compiles get the test stages' budgets plus
# B_PEER_WAIT from their start, however quickly the tests finish), so no compile work
# runs while anything is timed. Then, one row at a time, ours runs, and after it exits the
# peer of that row gets its GO and is waited for: no two timed parts ever overlap. Our
# correctness tests do share the GPU and the cores with the compiles; they are not timed.
#
# Carried state. cuDNN's algorithm-search results (kernels/conv_cudnn.cu, "the choices on
# disk") go to .gpucache/conv through DDPM_CONV_CACHE, so a later call skips the search;
# PyTorch's compile cache goes to .gpucache/inductor. Both come back in $OUT as tarballs,
# with the raw JSON lines (<date>-<gpu>-<commit>.jsonl, for docs/perf-logs/), the status
# of every stage and the whole console log: at most 8 files, as the device tool allows.
set -u
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
BIN=${BIN:-bin-gpu}
CALL_LIMIT_S=480
DRY_RUN=${DRY_RUN:-0}
STAGES=" ${STAGES:-ops suite bench} "
want() { [[ $STAGES == *" $1 "* ]]; }

# ---------------------------------------------------------------- budgets, in seconds
# (each can be set from the environment; their sum is checked against CALL_LIMIT_S)
B_ENV=${B_ENV:-15}               # nvidia-smi, versions, the carried binaries load (ldd, backends)
B_BUILD=${B_BUILD:-60}           # only when they do not: unpack .gpudeps, make -j16 on the device
B_OPS=${B_OPS:-70}               # bin-gpu/test_ops
B_SUITE=${B_SUITE:-45}           # e2e_resume on the GPU; CPU vs GPU first steps and GPU determinism
B_PEER_WAIT=${B_PEER_WAIT:-30}   # the peers' compiles, beyond the test budgets they overlap
B_PROBE=${B_PROBE:-15}           # one step of configs/tiny with mixed_precision=bf16
B_TRAIN128=${B_TRAIN128:-40}     # one bench_train run at batch 128 (cuDNN search included when uncached)
B_TRAIN8=${B_TRAIN8:-25}
B_SAMPLE256=${B_SAMPLE256:-30}
B_SAMPLE1=${B_SAMPLE1:-25}
B_PEER_TIMED=${B_PEER_TIMED:-12} # one peer past its gate: 2 re-warm steps, 50 timed, FLOP count, exit
B_DRIFT=${B_DRIFT:-40}           # our first benchmark again
B_TABLE=${B_TABLE:-5}
PEER_RUNS=6

section() { printf '\n==== %s ====\n' "$*"; }

# ---------------------------------------------------------------- --prepare (CPU machine)
prepare() {
    local carry_limit_mib=64 commit arch_flags="-O3 -march=x86-64-v3"
    section "build $BIN/ (CUDA=1, MPI=0, ONEDNN=0: the device has no oneDNN and its CPU backend is only the oracle; $arch_flags: the device's cores are not this machine's)"
    make -s -j"${JOBS:-2}" CUDA=1 MPI=0 ONEDNN=0 OPT="$arch_flags" BUILD=build-gpu BIN="$BIN" \
        "$BIN/ddpm" "$BIN/test_ops" "$BIN/bench_train" "$BIN/bench_sample" || return 1
    strip "$BIN/ddpm" "$BIN/test_ops" "$BIN/bench_train" "$BIN/bench_sample"
    commit=$(git rev-parse --short HEAD)
    git diff --quiet HEAD -- src include kernels tools Makefile || commit="$commit-dirty"
    printf 'commit=%s\nbuilt=%s\nnvcc=%s\n' "$commit" "$(date -u +%FT%TZ)" \
        "$(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p')" >"$BIN/BUILD_INFO"
    section "CPU engine libraries for the device (.gpudeps/)"
    # (again when stb, which older .gpudeps folders lack, is missing)
    ls .gpudeps/libopenblas0-openmp_*.deb .gpudeps/libstb0_*.deb >/dev/null 2>&1 ||
        bash tools/gpu_sysroot.sh download || return 1
    section "the peer (.yardstick/, from ../shared/yardstick)"
    [ -f ../shared/yardstick/bench_torch.py ] || { echo "no ../shared/yardstick"; return 1; }
    rm -rf .yardstick && cp -r ../shared/yardstick .yardstick && chmod -R u+w .yardstick
    section "caches (.gpucache/)"
    mkdir -p .gpucache/conv .gpucache/inductor
    local from=${GPU_CACHE_FROM:-}   # the files_at folder of the previous call
    if [ -n "$from" ]; then
        [ -f "$from/conv-cache.tar.gz" ] && tar -xzf "$from/conv-cache.tar.gz" -C .gpucache/conv
        [ -f "$from/inductor-cache.tar.gz" ] &&
            tar -xzf "$from/inductor-cache.tar.gz" -C .gpucache/inductor
    fi
    ls -la .gpucache/conv
    local carried=(bin-gpu .gpudeps .yardstick .gpucache) total_kib
    total_kib=$(( $(git ls-files -z | du -ck --files0-from=- | tail -1 | cut -f1) +
                  $(du -sk "${carried[@]}" | awk '{s += $1} END {print s}') ))
    printf 'what travels: %d KiB of %d MiB (tracked files and %s)\n' "$total_kib" \
        "$carry_limit_mib" "${carried[*]}"
    if [ "$total_kib" -gt $((carry_limit_mib * 1024)) ]; then
        echo "over the device tool's limit: empty .gpucache/inductor or .gpucache and retry"
        return 1
    fi
    cat <<EOF

The device call (the run tool sends the checkout its session started in: prepare there):
  command:   bash tools/gpu_check.sh
  carry:     ["bin-gpu", ".gpudeps", ".yardstick", ".gpucache"]
  timeout_s: 540   (480 s of stages, 60 s of slack; leaves a rerun's worth of the 15 minutes
                    only if the first call fails early)
Afterwards: copy files_at/*.jsonl to docs/perf-logs/, and give files_at to the next
  GPU_CACHE_FROM=<files_at> bash tools/gpu_check.sh --prepare
so that the next call skips cuDNN's search and most of PyTorch's compile.
EOF
}

if [ "${1:-}" = --prepare ]; then
    prepare
    exit $?
elif [ -n "${1:-}" ]; then
    echo "gpu_check.sh: unknown argument '$1' (only --prepare; DRY_RUN=1 and STAGES are variables)" >&2
    exit 2
fi

# ---------------------------------------------------------------- the plan
DRIFT_PLANNED=1
plan_total() {   # plan_total BUILD(0|1): the planned stages' budgets, in seconds
    local total=$((B_ENV + B_TABLE))
    [ "$1" = 1 ] && total=$((total + B_BUILD))
    want ops && total=$((total + B_OPS))
    want suite && total=$((total + B_SUITE))
    if want bench; then
        total=$((total + B_PEER_WAIT + B_PROBE + 2 * B_TRAIN128 + B_TRAIN8 + B_SAMPLE256 +
                 B_SAMPLE1 + PEER_RUNS * B_PEER_TIMED))
        [ "$DRIFT_PLANNED" = 1 ] && total=$((total + B_DRIFT))
    fi
    echo "$total"
}

WORK=$(mktemp -d)
OUT_DIR=${OUT:-}
# the whole console log comes back too (the device tool returns only the output's tail)
[ -n "$OUT_DIR" ] && [ "$DRY_RUN" != 1 ] && exec > >(tee "$OUT_DIR/gpu-check.log") 2>&1
RAW=$WORK/raw.jsonl
STATUS=$WORK/status.tsv
: >"$RAW"
: >"$STATUS"
PEER_PIDS=()
cleanup() {
    local pid
    for pid in "${PEER_PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    rm -rf "$WORK"
}
trap cleanup EXIT
START=$SECONDS
DEADLINE=$((START + CALL_LIMIT_S - B_TABLE))   # the table always gets its budget

note() { printf '%s\t%s\n' "$1" "$2" >>"$STATUS"; printf '  -> %s: %s\n' "$1" "$2"; }

# stage NAME BUDGET COMMAND...: runs it under timeout, its expected time printed first;
# output to $WORK/logs/NAME.log and the terminal. Skipped when the budget no longer fits.
stage() {
    local name=$1 budget=$2 rc start=$SECONDS
    shift 2
    if [ $((SECONDS + budget)) -gt "$DEADLINE" ]; then
        note "$name" "skipped: its ${budget} s no longer fit the ${CALL_LIMIT_S} s"
        return 125
    fi
    printf '\n---- %s (expected <= %d s; at %d s of %d)\n' "$name" "$budget" \
        $((SECONDS - START)) "$CALL_LIMIT_S"
    mkdir -p "$WORK/logs"
    if [ "$DRY_RUN" = 1 ]; then
        printf '[dry run] would run: %s\n' "$*" | tee "$WORK/logs/$name.log"
        note "$name" "dry run"
        return 0
    fi
    timeout -k 5 "$budget" "$@" >"$WORK/logs/$name.log" 2>&1
    rc=$?
    tail -n 15 "$WORK/logs/$name.log"
    case $rc in
    0) note "$name" "ok ($((SECONDS - start)) s)" ;;
    124 | 137) note "$name" "TIMEOUT after ${budget} s" ;;
    *) note "$name" "FAILED (exit $rc, $((SECONDS - start)) s)" ;;
    esac
    return "$rc"
}

# ---------------------------------------------------------------- 1. environment
env_report() {   # what is here: GPU, driver, toolkit, PyTorch, the build that travelled
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv ||
        echo "nvidia-smi: not found or failed"
    command -v nvcc >/dev/null && nvcc --version | tail -1
    python3 -c 'import torch; print("torch", torch.__version__, "cuDNN", torch.backends.cudnn.version())' \
        2>/dev/null || echo "python3 has no torch"
    cat "$BIN/BUILD_INFO" 2>/dev/null || echo "no $BIN/BUILD_INFO (not prepared with --prepare?)"
}
export -f env_report
export BIN
section "environment"
if [ "$DRY_RUN" = 1 ]; then
    stage env "$B_ENV" bash -c env_report
    echo "[dry run] would run: ldd $BIN/*; $BIN/ddpm backends"
    GPU_NAME="dry-run"
    LOADS=${DRY_RUN_LOADS:-1}
else
    stage env "$B_ENV" bash -c env_report
    GPU_NAME=$(timeout 5 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
    # The CPU engine's libraries are not on the device: .gpudeps supplies them.
    if ldd "$BIN/ddpm" 2>/dev/null | grep -q 'not found'; then
        # shellcheck source=tools/gpu_sysroot.sh
        source tools/gpu_sysroot.sh
    fi
    LOADS=0
    if [ -x "$BIN/ddpm" ] && ! ldd "$BIN"/* 2>/dev/null | grep 'not found' &&
       timeout 10 "$BIN/ddpm" backends 2>&1 | grep -qx cuda; then
        LOADS=1
    fi
fi
GPU_TAG=$(tr -c 'A-Za-z0-9\n' '-' <<<"${GPU_NAME:-unknown-gpu}" | tr -s '-' | sed 's/-$//')
COMMIT=$(sed -n 's/^commit=//p' "$BIN/BUILD_INFO" 2>/dev/null)
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
RAW_NAME=$(date -u +%Y-%m-%d)-$GPU_TAG-$COMMIT.jsonl

if [ "$LOADS" = 1 ]; then
    echo "the carried $BIN/ binaries load and see the GPU"
elif [ "$(plan_total 1)" -gt "$CALL_LIMIT_S" ]; then
    DRIFT_PLANNED=0   # the build's budget comes out of the drift check
fi
section "plan"
for name in ENV BUILD OPS SUITE PEER_WAIT PROBE TRAIN128 TRAIN8 SAMPLE256 SAMPLE1 PEER_TIMED \
            DRIFT TABLE; do
    var=B_$name
    printf '%-11s %4d s\n' "$name" "${!var}"
done
echo "peer runs: $PEER_RUNS x PEER_TIMED; TRAIN128 twice (bf16, TF32); stages: $STAGES"
echo "build on the device: $([ "$LOADS" = 1 ] && echo no || echo yes); drift check: $([ "$DRIFT_PLANNED" = 1 ] && echo yes || echo 'no (the build took its budget)')"
TOTAL=$(plan_total $((1 - LOADS)))
echo "total budget: $TOTAL s (limit $CALL_LIMIT_S s)"
if [ "$TOTAL" -gt "$CALL_LIMIT_S" ]; then
    echo "gpu_check.sh: the planned stages need $TOTAL s, over $CALL_LIMIT_S s: lower a budget or drop a stage" >&2
    exit 2
fi

# ---------------------------------------------------------------- 2. fallback build
if [ "$LOADS" != 1 ]; then
    # Rebuild from source against the device's toolkit and libraries: the four binaries,
    # CUDA objects included, took 34 s user + 7 s system CPU time on the development machine,
    # so rebuilding everything costs little more than the CUDA objects alone.
    [ "$DRY_RUN" = 1 ] || source tools/gpu_sysroot.sh
    stage build "$B_BUILD" make -s -j16 CUDA=1 MPI=0 ONEDNN=0 BUILD=build-gpu BIN="$BIN" \
        "$BIN/ddpm" "$BIN/test_ops" "$BIN/bench_train" "$BIN/bench_sample" ||
        echo "build failed: the stages below fail too"
fi

CACHE_DIR=${GPU_CACHE_DIR:-$ROOT/.gpucache}   # the carried caches (a test points it elsewhere)
mkdir -p "$CACHE_DIR/conv" "$CACHE_DIR/inductor"
export DDPM_CONV_CACHE=$CACHE_DIR/conv
export TORCHINDUCTOR_CACHE_DIR=$CACHE_DIR/inductor
export OMP_WAIT_POLICY=passive PYTHONUNBUFFERED=1

# ---------------------------------------------------------------- 3. peers: compile now
declare -A PEER_ARGS=(
    [peer_train_b128_bf16_compile]="train --batch 128 --precision bf16 --compile default"
    [peer_train_b128_tf32_compile]="train --batch 128 --precision tf32 --compile default"
    [peer_train_b8_tf32_compile]="train --batch 8 --precision tf32 --compile default"
    [peer_sample_b256_tf32_reduce_overhead]="sample --batch 256 --precision tf32 --compile reduce-overhead"
    [peer_sample_b1_tf32_reduce_overhead]="sample --batch 1 --precision tf32 --compile reduce-overhead"
    [peer_train_b128_tf32_eager]="train --batch 128 --precision tf32 --compile none"
)
declare -A PEER_PID=()
PEERS_DIR=$WORK/peers
mkdir -p "$PEERS_DIR"
PEER_LAUNCH=$SECONDS
if want bench; then
    section "the peer: ${#PEER_ARGS[@]} processes compile in the background (gated)"
    for name in "${!PEER_ARGS[@]}"; do
        read -ra args <<<"${PEER_ARGS[$name]}"
        cmd=(python3 tools/run_yardstick.py "${args[0]}" --config cifar10 "${args[@]:1}")
        if [ "$DRY_RUN" = 1 ]; then
            echo "[dry run] would start: nice -n 10 ${cmd[*]} (gate: $name.ready/.go)"
            continue
        fi
        DDPM_PEER_READY=$PEERS_DIR/$name.ready DDPM_PEER_GO=$PEERS_DIR/$name.go \
            DDPM_PEER_GATE_S=$CALL_LIMIT_S \
            timeout -k 5 $((DEADLINE - SECONDS)) nice -n 10 "${cmd[@]}" \
            >"$PEERS_DIR/$name.log" 2>&1 &
        PEER_PID[$name]=$!
        PEER_PIDS+=($!)
    done
fi

# ---------------------------------------------------------------- 4. correctness
if want ops; then
    section "op tests: GPU against CPU"
    stage test_ops "$B_OPS" "$BIN/test_ops"
    if grep -q "SKIP: no CUDA device" "$WORK/logs/test_ops.log" 2>/dev/null; then
        note test_ops "CUDA cases SKIPPED: no usable CUDA device (not passed)"
    fi
fi

# The suite stage's Python, written out here: bash cannot export a function holding a here-document.
cat >"$WORK/random_fashion.py" <<'EOF'
import gzip, os, struct, sys
n = 2048
with gzip.open(os.path.join(sys.argv[1], "train-images-idx3-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28) + os.urandom(n * 28 * 28))
with gzip.open(os.path.join(sys.argv[1], "train-labels-idx1-ubyte.gz"), "wb") as f:
    f.write(struct.pack(">II", 0x801, n) + bytes(b % 10 for b in os.urandom(n)))
EOF
cat >"$WORK/compare_first_steps.py" <<'EOF'
import csv, sys
cpu, gpu, gpu2 = ([float(r["loss"]) for r in csv.DictReader(open(p))] for p in sys.argv[1:4])
diff = abs(cpu[0] - gpu[0]) / abs(cpu[0])
print(f"step 1 loss: cpu {cpu[0]:.9g} gpu {gpu[0]:.9g} relative difference {diff:.2e} (limit 1e-4)")
print("two GPU runs:", "the same losses bit for bit" if gpu == gpu2 else f"DIFFER: {gpu} {gpu2}")
sys.exit(0 if diff < 1e-4 and gpu == gpu2 else 1)
EOF
suite_subset() {
    # e2e_resume trains configs/tiny, which reads Fashion-MNIST from Debian's path; a bare
    # device has none, so random images in its format stand in (resume is bit-exact on any data).
    local fashion=/usr/share/datasets/fashion-mnist rc=0
    if [ ! -f $fashion/train-images-idx3-ubyte.gz ]; then
        mkdir -p $fashion && python3 "$WORK/random_fashion.py" $fashion || return 1
        echo "random images stand in for Fashion-MNIST at $fashion"
    fi
    DDPM=$BIN/ddpm DDPM_TEST_PYTHON=python3 bash tests/e2e_resume.sh || rc=1
    first_steps cpu && first_steps cuda && first_steps cuda2 || return 1
    python3 "$WORK/compare_first_steps.py" "$WORK"/first_{cpu,cuda,cuda2}/run/log.csv || rc=1
    return $rc
}
first_steps() {   # first_steps cpu|cuda|cuda2: 8 logged steps of configs/tiny
    local device=${1%2}
    mkdir -p "$WORK/first_$1" && (cd "$WORK/first_$1" &&
        "$ROOT/$BIN/ddpm" train --config "$ROOT/configs/tiny" --device "$device" data_limit=256 \
            steps=8 log_every=1 ckpt_every=0 sample_n=0 dropout=0.1 out_dir=run >run.log 2>&1)
}
export -f suite_subset first_steps
export WORK ROOT BIN PEERS_DIR
if want suite; then
    section "suite subset on the GPU"
    stage suite "$B_SUITE" bash -c suite_subset
fi

# ---------------------------------------------------------------- 5. side by side
label() {   # label NAME [FIELDS]: the JSON lines of $WORK/logs/NAME.log into $RAW, labelled
    grep '^{' "$WORK/logs/$1.log" 2>/dev/null |
        sed "s/^{/{${2:-}\"run\": \"$1\", \"gpu\": \"${GPU_NAME//[^A-Za-z0-9 -]/}\", \"build_commit\": \"$COMMIT\", /" >>"$RAW"
}
ours() {   # ours NAME BUDGET ENV... -- ARGS...: one of our benchmarks
    local name=$1 budget=$2 envs=()
    shift 2
    while [ "$1" != -- ]; do envs+=("$1"); shift; done
    shift
    stage "$name" "$budget" env "${envs[@]}" "$@" && label "$name"
}
peer_timed() {   # peer_timed NAME: opens its gate, waits for its line
    local name=$1 pid=${PEER_PID[$1]:-}
    if [ "$DRY_RUN" = 1 ]; then
        stage "$name" "$B_PEER_TIMED" touch "$PEERS_DIR/$name.go"
        return
    fi
    if [ -z "$pid" ] || [ ! -f "$PEERS_DIR/$name.ready" ]; then
        note "$name" "not timed: $(grep -q . "$PEERS_DIR/$name.status" 2>/dev/null &&
            cat "$PEERS_DIR/$name.status" || echo 'not ready')"
        tail -n 5 "$PEERS_DIR/$name.log" 2>/dev/null
        return
    fi
    # past its budget the peer is stopped, so that it cannot run into the next timed part
    stage "$name" "$B_PEER_TIMED" bash -c 'wait_peer "$0" "$1"' "$name" "$pid" ||
        kill "$pid" 2>/dev/null
    cp "$PEERS_DIR/$name.log" "$WORK/logs/$name.log"
    label "$name"
}
wait_peer() {   # wait_peer NAME PID: GO, then until the process exits
    touch "$PEERS_DIR/$1.go"
    while kill -0 "$2" 2>/dev/null; do sleep 0.2; done
    grep -q '^{' "$PEERS_DIR/$1.log"
}
export -f wait_peer
wait_ready() {   # wait_ready DEADLINE: until every peer is READY or has exited, or DEADLINE
    local name pending
    while [ "$SECONDS" -lt "$1" ]; do
        pending=0
        for name in "${!PEER_PID[@]}"; do
            if [ ! -f "$PEERS_DIR/$name.ready" ] && kill -0 "${PEER_PID[$name]}" 2>/dev/null; then
                pending=$((pending + 1))
            fi
        done
        [ "$pending" -eq 0 ] && return 0
        sleep 1
    done
    return 1
}

if want bench; then
    section "side by side: ours, then the peer, one row at a time"
    if [ "$DRY_RUN" != 1 ]; then
        # The compiles get the test stages' whole budgets plus B_PEER_WAIT, however fast the
        # tests were: the planned total holds, and quick tests do not starve the compiles.
        ready_by=$((PEER_LAUNCH + B_PEER_WAIT))
        want ops && ready_by=$((ready_by + B_OPS))
        want suite && ready_by=$((ready_by + B_SUITE))
        printf -- '---- peer compiles (expected <= %d s from now, %d s after they started)\n' \
            $((ready_by - SECONDS)) $((ready_by - PEER_LAUNCH))
        wait_ready "$ready_by" || echo "peers still compiling $((ready_by - PEER_LAUNCH)) s after they started"
        for name in "${!PEER_PID[@]}"; do
            [ -f "$PEERS_DIR/$name.ready" ] && continue
            if kill -0 "${PEER_PID[$name]}" 2>/dev/null; then   # still compiling: must not run on
                echo "not compiled within the budget" >"$PEERS_DIR/$name.status"
                kill "${PEER_PID[$name]}"
            else
                echo "exited before its gate: $(tail -n 1 "$PEERS_DIR/$name.log")" >"$PEERS_DIR/$name.status"
            fi
        done
    fi
    BENCH_ARGS=(--config configs/cifar10_ddpm --device cuda --warmup 5 --iters 30)
    # mixed_precision=bf16 exists once the bf16 path is in; until then bench_train refuses it
    BF16=0
    if stage probe_bf16 "$B_PROBE" env DDPM_TF32=1 "$BIN/bench_train" --config configs/tiny \
           --device cuda batch_size=2 mixed_precision=bf16 --warmup 0 --iters 1; then
        BF16=1
    else
        note ours_train_b128_bf16 "not supported by this build (probe: $(tail -n 1 "$WORK/logs/probe_bf16.log" 2>/dev/null))"
    fi
    FIRST=ours_train_b128_tf32
    if [ "$BF16" = 1 ]; then
        FIRST=ours_train_b128_bf16
        ours ours_train_b128_bf16 "$B_TRAIN128" DDPM_TF32=1 -- "$BIN/bench_train" "${BENCH_ARGS[@]}" \
            batch_size=128 mixed_precision=bf16
    fi
    peer_timed peer_train_b128_bf16_compile
    ours ours_train_b128_tf32 "$B_TRAIN128" DDPM_TF32=1 -- "$BIN/bench_train" "${BENCH_ARGS[@]}" \
        batch_size=128
    peer_timed peer_train_b128_tf32_compile
    peer_timed peer_train_b128_tf32_eager
    ours ours_train_b8_tf32 "$B_TRAIN8" DDPM_TF32=1 -- "$BIN/bench_train" "${BENCH_ARGS[@]}" \
        batch_size=8
    peer_timed peer_train_b8_tf32_compile
    ours ours_sample_b256_tf32 "$B_SAMPLE256" DDPM_TF32=1 -- "$BIN/bench_sample" \
        "${BENCH_ARGS[@]}" batch_size=256
    peer_timed peer_sample_b256_tf32_reduce_overhead
    ours ours_sample_b1_tf32 "$B_SAMPLE1" DDPM_TF32=1 -- "$BIN/bench_sample" "${BENCH_ARGS[@]}" \
        batch_size=1
    peer_timed peer_sample_b1_tf32_reduce_overhead
    if [ "$DRIFT_PLANNED" = 1 ]; then
        section "drift: $FIRST again"
        drift_args=(batch_size=128)
        [ "$FIRST" = ours_train_b128_bf16 ] && drift_args+=(mixed_precision=bf16)
        stage ours_drift_repeat "$B_DRIFT" env DDPM_TF32=1 "$BIN/bench_train" \
            "${BENCH_ARGS[@]}" "${drift_args[@]}" &&
            label ours_drift_repeat "\"repeat_of\": \"$FIRST\", "
    fi
fi

# ---------------------------------------------------------------- 6. what comes back
section "raw lines and caches"
PERF_LOGS=${PERF_LOG_DIR:-docs/perf-logs}
if [ -s "$RAW" ]; then   # a dry run or a call that measured nothing leaves no file
    mkdir -p "$PERF_LOGS"
    cp "$RAW" "$PERF_LOGS/$RAW_NAME"
fi
echo "$(wc -l <"$RAW") raw lines: $PERF_LOGS/$RAW_NAME"
if [ -n "$OUT_DIR" ]; then   # at most 8 files come back
    cp "$RAW" "$OUT_DIR/$RAW_NAME"
    cp "$STATUS" "$OUT_DIR/status.tsv"
    tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs peers 2>/dev/null
    tar -czf "$OUT_DIR/conv-cache.tar.gz" -C "$CACHE_DIR/conv" .
    tar -czf "$WORK/inductor.tar.gz" -C "$CACHE_DIR/inductor" . 2>/dev/null
    if [ "$(stat -c %s "$WORK/inductor.tar.gz" 2>/dev/null || echo 0)" -le $((15 * 1024 * 1024)) ]; then
        cp "$WORK/inductor.tar.gz" "$OUT_DIR/inductor-cache.tar.gz"
    else
        echo "PyTorch's compile cache is over 15 MiB: not sent back"
    fi
    ls -la "$OUT_DIR"
fi

# ---------------------------------------------------------------- 7. the table, last
section "status of every stage (${GPU_NAME:-?}, build $COMMIT, $((SECONDS - START)) s)"
column -t -s $'\t' "$STATUS" 2>/dev/null || cat "$STATUS"
section "ddpm.c against the PyTorch peer (targets: docs/PERF.md)"
python3 tools/gpu_check_table.py "$RAW" "$STATUS"
