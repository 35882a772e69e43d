#!/usr/bin/env bash
# CPU training-step benchmark: ddpm.c against the PyTorch peer (../shared/yardstick,
# Debian's python3-torch), the same U-Net and batch, run back to back in this call.
# Keeps the raw JSON lines in docs/perf-logs/ and rewrites the CPU table in docs/PERF.md.
#   tools/bench_cpu.sh [batch] [iters]
set -euo pipefail
cd "$(dirname "$0")/.."
batch=${1:-32}
iters=${2:-5}
yardstick=${YARDSTICK:-../shared/yardstick}
threads=$(nproc)
make --no-print-directory -s bin/bench_train
mkdir -p docs/perf-logs
log="docs/perf-logs/cpu-$(date -u +%Y-%m-%d).jsonl"
ours=$(OMP_NUM_THREADS=$threads bin/bench_train --config configs/fashion_mnist batch_size=$batch \
       --warmup 2 --iters "$iters")
peer=$(/usr/bin/python3 "$yardstick/bench_torch.py" train --config fashion --batch "$batch" \
       --precision fp32 --threads "$threads" --warmup 2 --iters "$iters" | tail -1)
printf '%s\n%s\n' "$ours" "$peer" | tee -a "$log"
field() { /usr/bin/python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }
ours_ms=$(field "$ours" ms_per_step)
peer_ms=$(field "$peer" ms_per_step)
ratio=$(/usr/bin/python3 -c "print(f'{$peer_ms / $ours_ms:.2f}')")
cpu=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
torch_version=$(field "$peer" torch)
versions="ddpm.c $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(gcc --version | head -1), OpenBLAS $(dpkg-query -W -f='${Version}' libopenblas0-openmp 2>/dev/null || echo '?') (OpenMP build), PyTorch ${torch_version} (Debian python3-torch)"
table=$(cat <<EOT
| date | CPU | threads | batch | ddpm.c ms/step | PyTorch ${torch_version} ms/step | speed-up |
|---|---|---|---|---|---|---|
| $(date -u +%Y-%m-%d) | ${cpu} | ${threads} | ${batch} | ${ours_ms} | ${peer_ms} | ${ratio}x |

Versions: ${versions}. Raw lines: \`${log}\`. Model: configs/fashion_mnist (the yardstick's \`fashion\` U-Net, 8,949,761
parameters, dropout 0.1), fp32, one full training step (noising, forward, MSE, backward, clip 1.0,
AdamW, EMA), median of ${iters} after 2 warm-up steps, fresh random batches.
EOT
)
/usr/bin/python3 - "$table" <<'PY'
import re, sys
path, table = "docs/PERF.md", sys.argv[1]
text = open(path).read()
start, end = "<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), start + "\n" + table + "\n" + end, text,
              flags=re.S)
open(path, "w").write(text)
PY
echo "ddpm.c is ${ratio}x PyTorch on this CPU (batch ${batch}); docs/PERF.md updated"
