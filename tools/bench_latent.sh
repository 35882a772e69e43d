#!/usr/bin/env bash
# The latent DDPM's training step against the pixel DDPM's, at equal batch, in one run on
# one machine: bin/bench_train on configs/fashion_mnist_cpu (28x28x1) and
# configs/fashion_ldm (8x8x4 latents, the same U-Net widths), alternated ROUNDS times so
# that a load change on a shared machine hits both. Prints the JSON lines, then the
# medians and their ratio.
#   usage: tools/bench_latent.sh [ROUNDS=3] [ITERS=10] [THREADS=2] > docs/perf-logs/X.log
set -eu
ROUNDS=${1:-3} ITERS=${2:-10} THREADS=${3:-2}
export OMP_WAIT_POLICY=passive
echo "# $(git rev-parse --short HEAD) $(date -u +%FT%TZ) $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
lines=$(mktemp)
trap 'rm -f "$lines"' EXIT
for r in $(seq "$ROUNDS"); do
    for cfg in fashion_mnist_cpu fashion_ldm; do
        printf '%s ' "$cfg" >>"$lines"
        bin/bench_train --config "configs/$cfg" --device cpu --iters "$ITERS" threads="$THREADS" \
            batch_size=32 >>"$lines"
    done
done
cat "$lines"
python3 - "$lines" <<'PY'
import json, statistics, sys
ms = {}
for line in open(sys.argv[1]):
    name, _, js = line.partition(" ")
    ms.setdefault(name, []).append(json.loads(js)["ms_per_step"])
pix, lat = statistics.median(ms["fashion_mnist_cpu"]), statistics.median(ms["fashion_ldm"])
print(f"# median step: pixel {pix:.1f} ms, latent {lat:.1f} ms, ratio {pix / lat:.2f}x")
PY
