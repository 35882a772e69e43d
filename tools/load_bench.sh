#!/usr/bin/env bash
# Training step time alone and beside one busy single-threaded process (a shell loop at the
# same priority), with the engine's OpenMP wait policy (passive, see util.h) and with
# libgomp's default spinning (GOMP_SPINCOUNT=300000, the engine before the change).
# Prints one line per policy with both medians and their ratio; on 2 cores about 2x is fair.
# Usage: tools/load_bench.sh [ITERS] [key=value ...]   (default: configs/tiny, 2 threads)
set -u
cd "$(dirname "$0")/.."
iters=${1:-10}
shift || true
make --no-print-directory -s CUDA=0 bin/bench_train || exit 1
step_ms() {
    OMP_NUM_THREADS=2 "$@" bin/bench_train --config configs/tiny --device cpu --warmup 2 \
        --iters "$iters" threads=2 "${overrides[@]}" | sed -n 's/.*"ms_per_step": \([0-9.]*\).*/\1/p'
}
overrides=("$@")
for policy in passive spinning; do
    if [ "$policy" = spinning ]; then env_args=(env GOMP_SPINCOUNT=300000); else env_args=(env); fi
    alone=$(step_ms "${env_args[@]}")
    bash -c 'while :; do :; done' &
    busy=$!
    loaded=$(step_ms "${env_args[@]}")
    kill "$busy"
    wait "$busy" 2>/dev/null
    awk -v p=$policy -v a="$alone" -v l="$loaded" -v load="$(cut -d' ' -f1 /proc/loadavg)" \
        'BEGIN { printf "%-8s alone %.1f ms/step, beside a busy process %.1f ms/step: %.2fx (load average %s)\n", p, a, l, l / a, load }'
done
