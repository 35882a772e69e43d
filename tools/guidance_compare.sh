#!/usr/bin/env bash
# Measures guidance on Fashion-MNIST (docs/QUALITY.md, "Conditional generation"): samples a
# class-conditional model with classifier-free guidance and an unconditional model with
# classifier guidance at several scales, and scores each set with a clean classifier
# (`ddpm evaluate`: class accuracy, Frechet distance to the test set and its floor). Also
# times the sampling runs. Every line it prints is appended to OUT/results.jsonl.
#
#   tools/guidance_compare.sh [OUT]        (default OUT: runs/guidance_compare)
#
# Checkpoints (trained with the configs named; override with the variables):
#   COND  configs/fashion_cond               (class-conditional, class_dropout 0.1)
#   DDPM  configs/fashion_mnist_cpu          (unconditional)
#   NOISY configs/fashion_classifier         (noisy classifier, for guidance)
#   CLEAN configs/fashion_classifier_clean   (clean classifier, for scoring)
# N images per set (default 500: 50 per class), STEPS DDIM steps (default 50), SCALES.
set -euo pipefail
OUT=${1:-runs/guidance_compare}
DDPM_BIN=${DDPM_BIN:-bin/ddpm}
COND=${COND:-runs/fashion_cond/ckpt_00001500.safetensors}
DDPM=${DDPM:-runs/fashion_mnist_cpu/ckpt_00001500.safetensors}
NOISY=${NOISY:-runs/fashion_classifier/ckpt_00001500.safetensors}
CLEAN=${CLEAN:-runs/fashion_classifier_clean/ckpt_00001500.safetensors}
N=${N:-500}
STEPS=${STEPS:-50}
CFG_SCALES=${CFG_SCALES-0 1 2 4 8}
CLASSIFIER_SCALES=${CLASSIFIER_SCALES-0 1 2 4 8}
need=("$CLEAN")
[ -n "$CFG_SCALES" ] && need+=("$COND")
[ -n "$CLASSIFIER_SCALES" ] && need+=("$DDPM" "$NOISY")
for f in "${need[@]}"; do
    [ -f "$f" ] || { echo "guidance_compare: $f: no such checkpoint (see the header)" >&2; exit 1; }
done
mkdir -p "$OUT"
results="$OUT/results.jsonl"
touch "$results"
common=(--n "$N" --batch 50 --seed 1 --sampler ddim --steps "ddim$STEPS" --class all)

# one set: sample (timed), score, and one JSON line with the method, scale and seconds
run_set() {
    local name=$1 method=$2 scale=$3
    shift 3
    local dir="$OUT/$name" start end
    start=$(date +%s.%N)
    "$DDPM_BIN" sample "${common[@]}" --out "$dir" "$@" 2>"$dir.log" || { cat "$dir.log" >&2; exit 1; }
    end=$(date +%s.%N)
    "$DDPM_BIN" evaluate --classifier "$CLEAN" --samples "$dir/samples.npz" --json "$dir/eval.json" >/dev/null
    local seconds per_step
    seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
    per_step=$(awk -v s="$seconds" -v k="$STEPS" -v n="$N" 'BEGIN { print s / k / (n / 50) }')
    sed "s/}\$/, \"method\": \"$method\", \"scale\": $scale, \"sample_seconds\": $(printf %.1f "$seconds"), \"seconds_per_step_batch50\": $(printf %.3f "$per_step")}/" \
        "$dir/eval.json" | tee -a "$results"
}

for s in $CFG_SCALES; do
    run_set "cfg_s$s" classifier-free "$s" --ckpt "$COND" --guidance-scale "$s"
done
# scale 0 is the unconditional model unguided (the classifier is not run)
for s in $CLASSIFIER_SCALES; do
    run_set "classifier_s$s" classifier "$s" --ckpt "$DDPM" --classifier "$NOISY" --classifier-scale "$s"
done
echo "guidance_compare: $(wc -l <"$results") sets scored; lines in $results"
