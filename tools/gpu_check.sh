#!/usr/bin/env bash
# Bring-up check of the CUDA backend on a GPU machine (~15-25 minutes), from the repo root:
#   bash tools/gpu_check.sh
# 1. what is here: nvidia-smi, nvcc, where cuDNN/NCCL headers and libraries are;
# 2. builds bin/ddpm, bin/test_ops and bin/bench_train (CUDA=1);
# 3. bin/test_ops: every op case on the GPU against the CPU backend (and on the CPU against
#    its references), then bin/test_ops --bench: each case timed on both backends;
# 4. the test suite (C tests, end-to-end tests; bin/ddpm picks the GPU by itself), a
#    CPU-vs-GPU comparison of the first training steps, GPU run-to-run determinism;
# 5. throughput: bin/bench_train --device cuda on configs/cifar10_ddpm at batch 128
#    (strict fp32 and DDPM_TF32=1), and the PyTorch peer when .yardstick/ exists;
# then writes every JSON line to docs/perf-logs/<date>-<gpu>.jsonl and prints a table.
# Steps that fail are reported in the table; the script goes on with the next one.
# STAGES (default "ops suite train dist bench") picks the parts after the build, e.g.
#   STAGES="ops train" bash tools/gpu_check.sh
# Where the machine lacks OpenBLAS/cJSON/libpng/libzip, the .deb files that
# `bash tools/gpu_sysroot.sh download` put in .gpudeps/ are used (carry .gpudeps).
set -u
cd "$(dirname "$0")/.." || exit 1
STAGES=" ${STAGES:-ops suite train dist bench} "
want() { [[ $STAGES == *" $1 "* ]]; }
JOBS=${JOBS:-16}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
declare -a SUMMARY=()

section() { printf '\n==== %s ====\n' "$*"; }
record() { SUMMARY+=("$(printf '%-44s %s' "$1" "$2")"); }

# run_step NAME TIMEOUT_S COMMAND...: output to the terminal and $WORK/NAME.log
run_step() {
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS rc
    timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -eq 0 ]; then record "$name" "ok ($((SECONDS - start))s)"
    elif [ "$rc" -eq 124 ]; then record "$name" "TIMEOUT after ${limit}s"
    else record "$name" "FAILED (exit $rc, $((SECONDS - start))s)"; fi
    return "$rc"
}

# ---------------------------------------------------------------- 1. environment
section "GPU"
nvidia-smi || echo "nvidia-smi: not found or failed"
GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
GPU_TAG=$(tr -c 'A-Za-z0-9\n' '-' <<<"${GPU_NAME:-unknown-gpu}" | tr -s '-' | sed 's/-$//')

section "CUDA toolkit"
NVCC=$(command -v nvcc || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
if [ -n "$NVCC" ]; then "$NVCC" --version | tail -2; else echo "nvcc: not found"; fi

section "cuDNN, cuBLAS and NCCL: headers and libraries"
PIP_NVIDIA=$(python3 -c 'import nvidia; print(list(nvidia.__path__)[0])' 2>/dev/null || true)
SEARCH=(/usr/local/cuda /usr/local /usr/lib/x86_64-linux-gnu /usr/include)
for d in "${CUDNN_HOME:-}" "${NCCL_HOME:-}" "${CUDA_HOME:-}" "$PIP_NVIDIA"; do
    [ -n "$d" ] && SEARCH=("$d" "${SEARCH[@]}")
done
for pattern in cudnn_version.h nccl.h 'libcudnn.so*' 'libcublas.so*' 'libnccl.so*' \
               'libcudart.so*'; do
    found=$(for d in "${SEARCH[@]}"; do
                [ -d "$d" ] && find "$d" -maxdepth 4 -name "$pattern" 2>/dev/null
            done | sort -u | head -6)
    printf '%-16s %s\n' "$pattern" "${found:-(not found)}" | sed '2,$s/^/                 /'
done
[ -n "$PIP_NVIDIA" ] && echo "pip nvidia-* packages in $PIP_NVIDIA:" "$PIP_NVIDIA"/*/
for tool in gcc mpirun mpicc torchrun srun python3; do
    printf '%-16s %s\n' "$tool" "$(command -v "$tool" || echo '(not found)')"
done

# ---------------------------------------------------------------- 2. build
section "build"
for header in cblas.h cjson/cJSON.h png.h zip.h zlib.h; do
    if ! echo "#include <$header>" | gcc -E -xc - >/dev/null 2>&1 && [ -d .gpudeps ]; then
        echo "no $header here"
        source tools/gpu_sysroot.sh
        break
    fi
done
TEST_BINS=()
for f in tests/test_*.c; do f=${f#tests/}; TEST_BINS+=("bin/${f%.c}"); done
LOCAL_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d .)
build=(make -s CUDA=1 ${LOCAL_ARCH:+CUDA_ARCHS=$LOCAL_ARCH} -j"$JOBS" all bin/test_ops
       bin/bench_train bin/bench_sample "${TEST_BINS[@]}")
# MPI only bootstraps NCCL on a GPU machine: without a working mpicc, build without it
run_step build 900 "${build[@]}" || { make -s clean; run_step build_without_mpi 900 "${build[@]}" MPI=0; }
bin/ddpm backends

# A Fashion-MNIST-shaped IDX file: the real one when installed, else random images.
DATA=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
[ -f "$DATA" ] || DATA=$PWD/.gpudeps/fashion-mnist/train-images-idx3-ubyte.gz
if [ ! -f "$DATA" ]; then
    DATA=$WORK/images-idx3-ubyte
    python3 - "$DATA" <<'EOF'
import os, struct, sys
n = 512
with open(sys.argv[1], "wb") as f:
    f.write(struct.pack(">IIII", 0x803, n, 28, 28) + os.urandom(n * 28 * 28))
EOF
fi

# ---------------------------------------------------------------- 3. ops
if want ops; then
section "test_ops"
run_step test_ops 600 bin/test_ops
if grep -q "SKIP: no CUDA device" "$WORK/test_ops.log"; then
    SUMMARY[-1]=$(printf '%-44s %s' test_ops "CUDA cases SKIPPED: no usable CUDA device")
fi
run_step test_ops_bench 300 bin/test_ops --bench

fi

# ---------------------------------------------------------------- 4. suite and training
if want suite; then
section "test suite (bin/ddpm uses the GPU where the tests do not name a device)"
# The suite reads Fashion-MNIST from Debian's path and numpy from a python3 with numpy.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ -d .gpudeps/fashion-mnist ] && [ -w /usr/share ]; then
    mkdir -p /usr/share/datasets && cp -r .gpudeps/fashion-mnist /usr/share/datasets/
fi
DDPM_TEST_PYTHON=$(command -v python3) run_step test_suite 900 bash tests/run_tests.sh bin

# Hook: tests/test_torch_reference.c checks the U-Net against PyTorch on the CPU backend
# only; once it can take a backend (e.g. DDPM_DEVICE=cuda), run it here on the GPU.
if grep -q "DDPM_DEVICE" tests/test_torch_reference.c 2>/dev/null; then
    run_step torch_reference_gpu 300 env DDPM_DEVICE=cuda bin/test_torch_reference
else
    record torch_reference_gpu "not run: test_torch_reference is CPU-only today"
fi
fi

if want train; then

train() {   # train DIR DEVICE: 8 logged steps of configs/tiny
    (mkdir -p "$WORK/$1" && cd "$WORK/$1" &&
     "$OLDPWD/bin/ddpm" train --config "$OLDPWD/configs/tiny" --device "$2" data_path="$DATA" \
        data_limit=256 steps=8 log_every=1 ckpt_every=0 sample_n=0 dropout=0.1 out_dir=run)
}
section "CPU vs GPU: the first training steps"
if train cpu cpu >"$WORK/train_cpu.log" 2>&1 && train gpu cuda >"$WORK/train_gpu.log" 2>&1 &&
   train gpu2 cuda >"$WORK/train_gpu2.log" 2>&1; then
    paste -d, <(cut -d, -f1-3 "$WORK/cpu/run/log.csv") <(cut -d, -f2-3 "$WORK/gpu/run/log.csv")
    # same data, timesteps and noise: step 1 matches to fp32 noise, later steps drift slowly
    if python3 - "$WORK/cpu/run/log.csv" "$WORK/gpu/run/log.csv" <<'EOF'; then
import csv, sys
cpu, gpu = ([float(r["loss"]) for r in csv.DictReader(open(p))] for p in sys.argv[1:3])
diff = abs(cpu[0] - gpu[0]) / abs(cpu[0])
print(f"step 1 loss: cpu {cpu[0]:.9g} gpu {gpu[0]:.9g} relative difference {diff:.2e}")
sys.exit(0 if diff < 1e-4 else 1)
EOF
        record cpu_vs_gpu_step1 "ok"
    else
        record cpu_vs_gpu_step1 "FAILED: step-1 losses differ"
    fi
    if cmp -s <(cut -d, -f1-3 "$WORK/gpu/run/log.csv") \
              <(cut -d, -f1-3 "$WORK/gpu2/run/log.csv"); then
        record gpu_determinism "ok: two runs log the same losses bit for bit"
    else
        record gpu_determinism "FAILED: two GPU runs differ"
    fi
else
    tail -n 5 "$WORK"/train_*.log
    record cpu_vs_gpu_step1 "FAILED: a training run did not finish"
fi
fi

# ---------------------------------------------------------------- data parallel
# World size 1 through each launcher's environment goes through NCCL and must train
# exactly as a run without a launcher.
if want dist; then
section "data parallel at world size 1 (NCCL)"
dp_args=(--config "$PWD/configs/tiny" --device cuda data_path="$DATA" data_limit=256 steps=20
         log_every=5 ckpt_every=0 sample_n=0 dropout=0.1 out_dir=run)
dp_train() {   # dp_train NAME [launcher command and env...]: trains in $WORK/dp_NAME
    local name=$1
    shift
    mkdir -p "$WORK/dp_$name"
    (cd "$WORK/dp_$name" && timeout 300 "$@" "$OLDPWD/bin/ddpm" train "${dp_args[@]}") \
        >"$WORK/dp_$name.log" 2>&1
}
same_as_plain() {   # same_as_plain NAME: every tensor of its checkpoint equals the plain run's
    python3 - "$WORK/dp_plain/run/ckpt_00000020.safetensors" \
        "$WORK/dp_$1/run/ckpt_00000020.safetensors" <<'EOF'
import sys
sys.path.insert(0, "tools")
import st_io
a, b = (st_io.read(p)[0] for p in sys.argv[1:3])
differ = [k for k in a if a[k].tobytes() != b[k].tobytes()]
print(f"{len(a)} tensors, {len(differ)} differ {differ[:3]}")
sys.exit(1 if differ else 0)
EOF
}
dp_train plain env
port=29600
for launcher in torchrun-env openmpi-env slurm-env torchrun mpirun; do
    port=$((port + 2))
    case $launcher in
    torchrun-env) cmd=(env RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=$port) ;;
    openmpi-env) cmd=(env OMPI_COMM_WORLD_RANK=0 OMPI_COMM_WORLD_SIZE=1 OMPI_COMM_WORLD_LOCAL_RANK=0) ;;
    slurm-env) cmd=(env SLURM_PROCID=0 SLURM_STEP_NUM_TASKS=1 SLURM_LOCALID=0) ;;
    torchrun) cmd=(torchrun --nproc-per-node 1 --master-port $port --no-python) ;;
    mpirun) cmd=(mpirun --allow-run-as-root -np 1) ;;
    esac
    if dp_train "$launcher" "${cmd[@]}" && grep -q "data parallel: 1 ranks" "$WORK/dp_$launcher.log" &&
       same_as_plain "$launcher"; then
        record "dp_world1_$launcher" "ok: NCCL, bit-identical to the plain run"
    else
        tail -5 "$WORK/dp_$launcher.log"
        record "dp_world1_$launcher" "FAILED"
    fi
done
fi

# ---------------------------------------------------------------- 5. throughput
JSONL=docs/perf-logs/$(date +%Y-%m-%d)-$GPU_TAG.jsonl
if want bench; then
section "throughput"
mkdir -p docs/perf-logs
bench() {   # bench NAME COMMAND...: keeps its JSON lines, labelled "run": NAME
    local name=$1
    shift
    run_step "$name" 600 "$@" &&
        grep '^{' "$WORK/$name.log" | sed "s/^{/{\"run\": \"$name\", /" >>"$JSONL"
}
bench bench_ddpm_fp32 bin/bench_train --config configs/cifar10_ddpm --device cuda batch_size=128
bench bench_ddpm_tf32 env DDPM_TF32=1 bin/bench_train --config configs/cifar10_ddpm --device cuda \
    batch_size=128
# the all-reduce's fixed cost: NCCL at world size 1 (torchrun's variables) against none
bench bench_ddpm_tf32_nccl1 env DDPM_TF32=1 RANK=0 WORLD_SIZE=1 LOCAL_RANK=0 \
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29650 bin/bench_train --config configs/cifar10_ddpm \
    --device cuda batch_size=128
for batch in 8 16 32 64; do   # step time against the per-GPU batch, for the scaling model
    bench "bench_ddpm_tf32_b$batch" env DDPM_TF32=1 bin/bench_train --config configs/cifar10_ddpm \
        --device cuda batch_size=$batch
done
for batch in 256 2; do
    bench "sample_ddpm_tf32_b$batch" env DDPM_TF32=1 bin/bench_sample --config configs/cifar10_ddpm \
        --device cuda batch_size=$batch
done
if [ "${PEERS:-all}" = none ]; then
    record bench_torch "not run: PEERS=none"
elif [ -f .yardstick/bench_torch.py ]; then
    peer() { bench "$1" python3 tools/run_yardstick.py "${@:2}"; }
    peer torch_train_fp32_none train --config cifar10 --batch 128 --precision fp32 --compile none
    peer torch_train_tf32_none train --config cifar10 --batch 128 --precision tf32 --compile none
    if [ "${PEERS:-all}" = all ]; then   # PEERS=eager skips the compiled peers (minutes each)
        peer torch_train_tf32_default train --config cifar10 --batch 128 --precision tf32 \
            --compile default
        for batch in 256 2; do   # the peer fails at batch 1 (a squeeze in its sampler)
            peer "torch_sample_tf32_b$batch" sample --config cifar10 --batch $batch \
                --precision tf32 --compile reduce-overhead
        done
    fi
else
    record bench_torch "not run: no .yardstick/bench_torch.py (cp -r ../shared/yardstick .yardstick)"
fi
fi

# ---------------------------------------------------------------- summary
section "summary ($GPU_NAME)"
printf '%s\n' "${SUMMARY[@]}"
if [ -s "$JSONL" ]; then
    echo
    echo "throughput (raw lines in $JSONL):"
    python3 - "$JSONL" <<'EOF' || cat "$JSONL"
import json, sys
print(f"{'run':<26} {'engine':<12} {'batch':>5} {'ms/step':>9} {'img/s':>9}")
for line in open(sys.argv[1]):
    r = json.loads(line)
    ms = float(r.get("ms_per_step", "nan"))
    ips = float(r.get("img_per_s", "nan"))
    engine = r.get("engine") or r.get("peer") or "?"
    print(f"{r.get('run', '?'):<26} {engine:<12} {r.get('batch', '?'):>5} "
          f"{ms:>9.2f} {ips:>9.1f}")
EOF
fi
