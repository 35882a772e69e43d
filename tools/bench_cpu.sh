#!/usr/bin/env bash
# The CPU benchmark against PyTorch: ddpm.c and the yardstick (../shared/yardstick), the
# same U-Net, batch and thread count, interleaved in one call on this machine.
#
#   tools/bench_cpu.sh [--rounds N] [--train-batch B] [--sample-batch B] [--iters N]
#                      [--no-compile] [--no-doc]
#
# Each round runs, one after another: ours, ours on the im2col convolutions (the path
# before oneDNN), PyTorch 2.x eager, PyTorch 2.x torch.compile and Debian's PyTorch 1.13,
# for a training step (fashion U-Net, batch 32) and then for a sampling step (batch 64);
# then ours once more beside one busy process (a shell loop) on
# the same cores. The table gives, per engine, the median over rounds of each run's median
# step, with the rounds' p10 and p90, and our ratio against the faster PyTorch 2.x mode.
#
# PyTorch 2.x comes from PyPI in .venv-torch, which this script makes the first time
# (several GB with its CUDA dependencies; never in CI). Every raw JSON line goes to
# docs/perf-logs/cpu-<date>-<commit>.jsonl, after a line recording the CPU model, its
# vector extensions and the versions; the table replaces the cpu-bench block of
# docs/PERF.md unless --no-doc.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 train_batch=32 sample_batch=64 iters=5 compile=1 write_doc=1
while [ $# -gt 0 ]; do
    case $1 in
    --rounds) rounds=$2; shift ;;
    --train-batch) train_batch=$2; shift ;;
    --sample-batch) sample_batch=$2; shift ;;
    --iters) iters=$2; shift ;;
    --no-compile) compile=0 ;;
    --no-doc) write_doc=0 ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "bench_cpu.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$rounds" "$train_batch" "$sample_batch" "$iters"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench_cpu.sh: '$n' is not a positive integer" >&2; exit 2; }
done

yardstick=${YARDSTICK:-../shared/yardstick}
[ -f "$yardstick/bench_torch.py" ] || { echo "bench_cpu.sh: no $yardstick/bench_torch.py (set YARDSTICK)" >&2; exit 2; }
threads=$(nproc)
export OMP_NUM_THREADS=$threads OMP_WAIT_POLICY=passive

venv=.venv-torch
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch' 2>/dev/null; then
    echo "bench_cpu.sh: making $venv with PyTorch from PyPI (once; several GB)" >&2
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch numpy
fi

make --no-print-directory -s bin/bench_train bin/bench_sample
commit=$(git describe --always --dirty --abbrev=7 2>/dev/null || echo unknown)
mkdir -p docs/perf-logs
log="docs/perf-logs/cpu-$(date -u +%Y-%m-%d)-${commit}.jsonl"
: >"$log"

cpu_model=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
vector=$(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|avx512[a-z_0-9]*|amx[a-z_0-9]*|avx_vnni)$' | sort | tr '\n' ' ')
torch2=$("$venv/bin/python" -c 'import torch; print(torch.__version__)')
torch1=$(/usr/bin/python3 -c 'import torch; print(torch.__version__)')
onednn=$(dpkg-query -W -f='${Version}' libdnnl-dev 2>/dev/null || echo none)
openblas=$(dpkg-query -W -f='${Version}' libopenblas0-openmp 2>/dev/null || echo '?')
/usr/bin/python3 - "$cpu_model" "$vector" "$threads" "$commit" "$torch2" "$torch1" "$onednn" \
    "$openblas" "$(gcc --version | head -1)" >>"$log" <<'PY'
import json, sys, datetime
keys = ["cpu", "vector_extensions", "threads", "commit", "torch2", "torch1", "onednn", "openblas", "gcc"]
row = dict(zip(keys, sys.argv[1:]))
row["record"] = "machine"
row["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
print(json.dumps(row))
PY

# run LABEL COMMAND...: one JSON line tagged with the label, appended to the log.
run() {
    local label=$1 line
    shift
    if ! line=$("$@" 2>/dev/null | tail -1) || [[ $line != "{"* ]]; then
        echo "bench_cpu.sh: $label failed: $*" >&2
        return 0
    fi
    /usr/bin/python3 -c 'import json,sys; d=json.loads(sys.argv[2]); d["label"]=sys.argv[1]; print(json.dumps(d))' \
        "$label" "$line" | tee -a "$log" >/dev/null
    echo "  $label: $(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ms_per_step"])' "$line") ms" >&2
}

peer() {   # peer PYTHON MODE BATCH [args]
    local py=$1 mode=$2 batch=$3
    shift 3
    "$py" "$yardstick/bench_torch.py" "$mode" --config fashion --batch "$batch" --precision fp32 \
        --threads "$threads" --warmup 2 --iters "$iters" "$@"
}

# The SGEMM peak our benchmarks report is OpenBLAS's with this environment's settings;
# where OPENBLAS_CORETYPE (and OPENBLAS_L2_SIZE) are set, also measure it with OpenBLAS's
# own choice of kernels, in that command alone.
if [ -n "${OPENBLAS_CORETYPE:-}${OPENBLAS_L2_SIZE:-}" ]; then
    run "sgemm openblas-own-kernels" env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \
        bin/bench_sample --config configs/tiny batch_size=1 --warmup 0 --iters 1 --profile 0
fi

ours_train=(bin/bench_train --config configs/fashion_mnist batch_size="$train_batch" --warmup 2 --iters "$iters")
ours_sample=(bin/bench_sample --config configs/fashion_mnist batch_size="$sample_batch" --warmup 1 --iters "$iters")
for r in $(seq "$rounds"); do
    echo "round $r of $rounds" >&2
    run "train ddpm.c" "${ours_train[@]}"
    run "train ddpm.c im2col" env DDPM_CPU_CONV=im2col "${ours_train[@]}" --profile 0
    run "train torch2 eager" peer "$venv/bin/python" train "$train_batch"
    [ "$compile" = 1 ] && run "train torch2 compile" peer "$venv/bin/python" train "$train_batch" --compile default
    run "train torch1.13 eager" peer /usr/bin/python3 train "$train_batch"
    run "sample ddpm.c" "${ours_sample[@]}"
    run "sample torch2 eager" peer "$venv/bin/python" sample "$sample_batch"
    [ "$compile" = 1 ] && run "sample torch2 compile" peer "$venv/bin/python" sample "$sample_batch" --compile default
    run "sample torch1.13 eager" peer /usr/bin/python3 sample "$sample_batch"
    bash -c 'while :; do :; done' &
    busy=$!
    run "train ddpm.c beside a busy process" "${ours_train[@]}" --profile 0 --sgemm-peak 0
    kill "$busy"
    wait "$busy" 2>/dev/null || true
done

table=$(/usr/bin/python3 tools/bench_cpu_table.py "$log")
echo "$table"
if [ "$write_doc" = 1 ]; then
    /usr/bin/python3 - "$table" <<'PY'
import re, sys
path, table = "docs/PERF.md", sys.argv[1]
text = open(path).read()
start, end = "<!-- cpu-bench:start -->", "<!-- cpu-bench:end -->"
text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda m: start + "\n" + table + "\n" + end,
              text, flags=re.S)
open(path, "w").write(text)
PY
    echo "docs/PERF.md: the cpu-bench block rewritten from $log" >&2
fi
