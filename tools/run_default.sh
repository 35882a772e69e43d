#!/usr/bin/env bash
# `make run`: set up, build, train configs/fashion_mnist and write a sample grid.
# With a GPU the full config runs; on the CPU a budget that finishes in about
# 15 minutes on 2 cores, and it says so.
set -eu
cd "$(dirname "$0")/.."
bash tools/setup.sh
make --no-print-directory bin/ddpm
config=configs/fashion_mnist
if bin/ddpm backends | grep -qx cuda; then
    echo "GPU found: training the full $config (see its steps and out_dir)."
    exec bin/ddpm train --config "$config" --device cuda
fi
budget=(steps=360 batch_size=16 warmup=50 ema_decay=0.99 sample_n=4 log_every=20
        ckpt_every=120 out_dir=runs/fashion_mnist_cpu)
echo "No GPU: training $config on the CPU with a ~15-minute budget on 2 cores:"
echo "  ${budget[*]}"
echo "  (360 steps make blurry shapes, not clothes; the full run is"
echo "   'bin/ddpm train --config $config' and needs a GPU to finish in reasonable time)"
bin/ddpm train --config "$config" --device cpu "${budget[@]}"
echo "samples: runs/fashion_mnist_cpu/samples.png; log: runs/fashion_mnist_cpu/log.csv"
