#!/usr/bin/env bash
# Same bytes as recorded: two short runs (L_simple; and learned variances with the hybrid
# loss, the importance sampler and dropout) and a respaced sample from each give the
# tensors, losses and images whose hashes are in tests/ref/same_bytes_*.txt. They were
# recorded before the graph refactor (commit b37a65e), and re-recorded when the ResBlock
# was fused (conv1's bias added with the time embedding, the skip add written by the last
# conv: a few float additions in another order, within 1e-6 of the plain chain, see
# tests/test_fusion.c; and dropout streams numbered by dropout rather than by node). The
# plain chain with node-numbered streams still gave the earlier hashes exactly. Re-recorded
# again when attention came to run its samples in parallel (each sample's GEMMs then run on
# one OpenBLAS thread, whose kernels round differently from its 2-thread split); the
# previous attention code still gave the previous hashes exactly. Re-recorded again when
# the softmax came to use the vectorised exponential (cpu_math.h) instead of libm's expf.
# A change that moves any bit fails here; one that means to must re-record, and say why.
source tests/lib_e2e.sh
# The bits of a float GEMM depend on OpenBLAS's kernel, its blocking and the thread count:
# the hashes were recorded with its Haswell (AVX2) kernels, a 512 KiB L2 setting and 2
# threads, which are pinned here so that any x86-64 machine with AVX2 reproduces them.
grep -qw avx2 /proc/cpuinfo 2>/dev/null || skip "the recorded hashes need OpenBLAS's AVX2 kernels"
export OMP_NUM_THREADS=2 OPENBLAS_CORETYPE=Haswell OPENBLAS_L2_SIZE=512
# The bytes were recorded on the im2col convolutions and OpenBLAS's GEMMs (the oracles);
# oneDNN's JIT kernels depend on the machine's vector ISA, so they have no
# machine-independent bytes to pin.
export DDPM_CPU_CONV=im2col DDPM_CPU_GEMM=openblas
[ -n "${DDPM_SANITIZE:-}" ] && skip "under the sanitizers (the same code, slower)"
check_run() {
    local name=$1
    shift
    local dir="$WORK/$name"
    mkdir -p "$dir"
    (cd "$dir" && "$DDPM" train --config "$ROOT/configs/tiny" steps=20 ckpt_every=20 sample_n=0 \
        log_every=1 data_limit=512 out_dir=run "$@" 2>/dev/null) || fail "$name: training"
    "$DDPM" sample --ckpt "$dir/run/ckpt_00000020.safetensors" --n 4 --seed 7 --steps 50 \
        --out "$dir/samples" 2>/dev/null || fail "$name: sampling"
    "$PY" tools/same_bytes_hashes.py "$dir/run" "$dir/run/ckpt_00000020.safetensors" \
        "$dir/samples/samples.npz" >"$dir/hashes.txt" || fail "$name: hashing"
    if [ -n "${DDPM_RECORD_SAME_BYTES:-}" ]; then
        cp "$dir/hashes.txt" "tests/ref/same_bytes_$name.txt"
    fi
    diff "tests/ref/same_bytes_$name.txt" "$dir/hashes.txt" >&2 ||
        fail "$name: results differ from the recorded bytes (lines above)"
    ok
}
check_run simple
check_run hybrid learn_sigma=true out_channels=2 loss=hybrid timestep_sampler=loss_second_moment dropout=0.1
finish
