#!/usr/bin/env bash
# One sampling step of each sampler, interleaved 3 times so that all see the same load:
# 32 images in one batch, DDIM 5 steps (5 evaluations), Euler 5 steps (5), Heun 5 steps (9).
# Timing does not depend on the weights: the flow checkpoint at step 500 stands in.
# Run from the folder that holds fm/ (the flow run), e.g. /work/shared-runs/flow.
B=${DDPM:-bin/ddpm}
for round in 1 2 3; do
  $B sample --ckpt /work/shared-runs/fashion_ddpm/ckpt_00001500.safetensors --sampler ddim --steps ddim5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/ddim  round $round: /"
  $B sample --ckpt fm/ckpt_00000500.safetensors --sampler euler --steps 5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/euler round $round: /"
  $B sample --ckpt fm/ckpt_00000500.safetensors --sampler heun --steps 5 --n 32 --batch 32 --out /tmp/flow_timing 2>&1 | grep sampled | sed "s/^/heun  round $round: /"
done
