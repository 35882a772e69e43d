#!/usr/bin/env bash
# One sampling step of each sampler, interleaved 3 times so that all see the same load:
# 32 images in one batch, DDIM 5 steps (5 evaluations), Euler 5 steps (5), Heun 5 steps (9).
# Timing does not depend on the weights: the flow checkpoint at step 500 stands in.
# DDPM_CKPT: the DDPM checkpoint (default runs/fashion_mnist_cpu's), FLOW_CKPT: the flow one
# (default runs/fashion_flow's step 500).
B=${DDPM:-bin/ddpm}
DDPM_CKPT=${DDPM_CKPT:-runs/fashion_mnist_cpu/ckpt_00001500.safetensors}
FLOW_CKPT=${FLOW_CKPT:-runs/fashion_flow/ckpt_00000500.safetensors}
for round in 1 2 3; do
  $B sample --ckpt "$DDPM_CKPT" --sampler ddim --steps ddim5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/ddim  round $round: /"
  $B sample --ckpt "$FLOW_CKPT" --sampler euler --steps 5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/euler round $round: /"
  $B sample --ckpt "$FLOW_CKPT" --sampler heun --steps 5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/heun  round $round: /"
done
