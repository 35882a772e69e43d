#!/usr/bin/env bash
# The quality comparison of docs/QUALITY.md: trains the same model with the mse and the
# hybrid loss for the same steps, measures test-set bits/dim (full bound), and samples
# one checkpoint with 1000-step ancestral, 100-step respaced and DDIM-50 sampling, timing
# each. Usage: tools/quality.sh CONFIG STEPS [key=value ...]   (outputs under runs/quality/)
set -euo pipefail
cd "$(dirname "$0")/.."
config=$1 steps=$2
shift 2
make --no-print-directory -s bin/ddpm
test_set=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
out=runs/quality
mkdir -p "$out"
for loss in mse hybrid; do
    extra=(loss=$loss)
    [ "$loss" = hybrid ] && extra+=(learn_sigma=true out_channels=2)
    bin/ddpm train --config "$config" "$@" "${extra[@]}" steps="$steps" ckpt_every=0 sample_n=0 \
        out_dir="$out/$loss" 2>"$out/$loss.train.log"
    ckpt=$(ls "$out/$loss"/ckpt_*.safetensors | tail -1)
    bin/ddpm eval --ckpt "$ckpt" --data "$test_set" --n "${EVAL_N:-64}" --csv "$out/$loss.terms.csv" \
        2>/dev/null | sed "s/^/$loss: /" | tee "$out/$loss.eval.txt"
done
ckpt=$(ls "$out/hybrid"/ckpt_*.safetensors | tail -1)
for sampler in "ancestral 1000" "ancestral 100" "ddim ddim50"; do
    set -- $sampler
    start=$(date +%s.%N)
    bin/ddpm sample --ckpt "$ckpt" --n 16 --seed 0 --sampler "$1" --steps "$2" \
        --out "$out/samples_$1_$2" 2>/dev/null
    end=$(date +%s.%N)
    echo "sampling $1 $2 steps, 16 images: $(awk "BEGIN { printf \"%.1f\", $end - $start }") s" | tee -a "$out/timing.txt"
done
