#!/usr/bin/env bash
# `make run` (after the set-up and the build): trains the default model and writes an 8x8
# grid of samples, enlarged 4 times so that it is readable on a screen.
# With a GPU: the full configs/fashion_mnist (30,000 steps, 1000-step ancestral sampling).
# On the CPU: configs/fashion_mnist_cpu, a 1.1M-parameter model sized to finish within
# 15 minutes on 2 cores (docs/QUALITY.md says what was measured); DDIM in 50 steps.
# Running it again resumes from the newest checkpoint, so a finished run only samples again.
set -eu
cd "$(dirname "$0")/.."
ddpm=${BIN:-bin}/ddpm
[ -x "$ddpm" ] || { echo "run_default: $ddpm is missing; 'make run' builds it" >&2; exit 1; }
if "$ddpm" backends | grep -qx cuda; then
    device=cuda config=configs/fashion_mnist out=runs/fashion_mnist
    sampling=(--sampler ancestral)
    echo "GPU found: training the full $config"
else
    device=cpu config=configs/fashion_mnist_cpu out=runs/fashion_mnist_cpu
    sampling=(--sampler ddim --steps ddim50)
    echo "No GPU: training $config, the CPU-sized default (configs/fashion_mnist needs a GPU)"
fi
"$ddpm" train --config "$config" --device "$device" --resume out_dir="$out"
ckpt=$(ls "$out"/ckpt_*.safetensors | tail -1)
"$ddpm" sample --ckpt "$ckpt" --device "$device" --n 64 --seed 0 --scale 4 \
    "${sampling[@]}" --out "$out/final"
echo "samples: $out/final/samples.png (8x8, 4x enlarged); log: $out/log.csv"
