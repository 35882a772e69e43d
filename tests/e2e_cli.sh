#!/usr/bin/env bash
# The command line: schedule CSV, info, train's run directory, and sample's outputs.
source tests/lib_e2e.sh

csv="$WORK/schedule.csv"
"$DDPM" schedule --config "$ROOT/configs/tiny" >"$csv" || fail "schedule"
header="t,betas,alphas_cumprod,alphas_cumprod_prev,alphas_cumprod_next,sqrt_alphas_cumprod,sqrt_one_minus_alphas_cumprod,log_one_minus_alphas_cumprod,sqrt_recip_alphas_cumprod,sqrt_recipm1_alphas_cumprod,posterior_variance,posterior_log_variance_clipped,posterior_mean_coef1,posterior_mean_coef2"
[ "$(head -1 "$csv")" = "$header" ] || fail "schedule header: $(head -1 "$csv")"
[ "$(wc -l <"$csv")" -eq 1001 ] || fail "schedule rows"
[ "$(sed -n 2p "$csv" | cut -d, -f1-2)" = "0,0.0001" ] || fail "first beta: $(sed -n 2p "$csv")"
[ "$(tail -1 "$csv" | cut -d, -f1-2)" = "999,0.02" ] || fail "last beta: $(tail -1 "$csv")"
"$DDPM" schedule --config "$ROOT/configs/tiny" timesteps=50 beta_schedule=cosine | tail -1 |
    grep -q '^49,0.999,' || fail "cosine schedule clips at 0.999"
ok

"$DDPM" info --config "$ROOT/configs/cifar10_ddpm" | grep -qx "parameters: 35746307" ||
    fail "the paper's CIFAR-10 model has 35,746,307 parameters"
"$DDPM" info --config "$ROOT/configs/cifar10_ddpm" | grep -q "^up_blocks.2.attentions.2.to_out.0.weight  *\[256, 256\]" ||
    fail "diffusers names and PyTorch shapes"
"$DDPM" --help | grep -q "ddpm sample" || fail "help"
expect_error "unknown command" "unknown command 'fly'" "$DDPM" fly
ok

run="$WORK/run"
"$DDPM" train --config "$ROOT/configs/tiny" timesteps=100 steps=3 log_every=1 sample_n=2 \
    data_limit=64 out_dir="$run" 2>"$WORK/train.log" || fail "train: $(cat "$WORK/train.log")"
grep -q '"steps":	3' "$run/config.json" || fail "effective config not saved with overrides"
grep -q "^step 3/3 | loss" "$WORK/train.log" || fail "progress line"
grep -q "ETA" "$WORK/train.log" || fail "ETA in the progress line"
[ "$(head -1 "$run/log.csv")" = "step,loss,grad_norm,lr,img_per_s,skipped,loss_q0,loss_q1,loss_q2,loss_q3,vb_bpd" ] ||
    fail "log.csv header"
[ "$(wc -l <"$run/log.csv")" -eq 4 ] || fail "log.csv rows"
[ -s "$run/samples.png" ] || fail "training writes a sample grid"
ok

ckpt="$run/ckpt_00000003.safetensors"
"$DDPM" sample --ckpt "$ckpt" --n 3 --out "$WORK/s1" --seed 5 2>/dev/null || fail "sample"
"$DDPM" sample --ckpt "$ckpt" --n 3 --out "$WORK/s2" --seed 5 --batch 2 2>/dev/null || fail "sample"
"$DDPM" sample --ckpt "$ckpt" --n 3 --out "$WORK/s3" --seed 6 2>/dev/null || fail "sample"
[ -s "$WORK/s1/samples.png" ] || fail "sample grid"
"$PY" - "$WORK" <<'PY' || fail "samples.npz"
import sys, numpy as np
w = sys.argv[1]
a, c = (np.load(f"{w}/{d}/samples.npz")["arr_0"] for d in ("s1", "s3"))
assert a.dtype == np.uint8 and a.shape == (3, 32, 32, 1), (a.dtype, a.shape)
assert a.std() > 0, "images are constant"
assert not np.array_equal(a, c), "different seeds gave the same images"
b = np.load(f"{w}/s2/samples.npz")["arr_0"]
assert b.shape == a.shape
PY
ok
"$DDPM" sample --ckpt "$ckpt" --n 3 --out "$WORK/s4" --seed 5 2>/dev/null || fail "sample"
cmp -s "$WORK/s1/samples.png" "$WORK/s4/samples.png" || fail "the same seed gave different images"
ok
# --scale 3 enlarges the PNG grid's images (3 of 32x32 in a 2x2 grid with 2-pixel gaps) and
# leaves samples.npz as it was; test_data checks the enlarged pixels.
"$DDPM" sample --ckpt "$ckpt" --n 3 --out "$WORK/s5" --seed 5 --scale 3 2>/dev/null ||
    fail "sample --scale 3"
"$PY" - "$WORK" <<'PY' || fail "--scale changed samples.npz"
import sys, numpy as np
a, b = (np.load(f"{sys.argv[1]}/{d}/samples.npz")["arr_0"] for d in ("s1", "s5"))
assert a.shape == (3, 32, 32, 1) and np.array_equal(a, b), (a.shape, b.shape)
PY
[ "$(od -An -tx1 -j16 -N8 "$WORK/s5/samples.png" | tr -d ' \n')" = 000000c6000000c6 ] ||
    fail "--scale 3: the grid is not 198 x 198 pixels"
expect_error "--scale 0" "--scale: expected an integer in [1, 16]" \
    "$DDPM" sample --ckpt "$ckpt" --scale 0
ok
expect_error "sample without --ckpt" "--ckpt is required" "$DDPM" sample --n 2
expect_error "missing checkpoint" "$WORK/none.safetensors" "$DDPM" sample --ckpt "$WORK/none.safetensors"
# --help on every command: the usage on stdout, status 0
for command in train sample invert eval evaluate export import forward schedule info backends \
    encode reconstruct; do
    out=$("$DDPM" "$command" --help 2>&1) || fail "ddpm $command --help exits non-zero"
    grep -q "usage" <<<"$out" || fail "ddpm $command --help prints no usage"
done
ok
# the benchmarks (tools/bench_*.c), one step each: they must run, not crash
bench_dir=$(dirname "$DDPM")
for bench in bench_train bench_sample; do
    out=$("$bench_dir/$bench" --config "$ROOT/configs/tiny" --device cpu --warmup 0 --iters 1 \
        batch_size=2 2>&1) || fail "$bench: $out"
    grep -q '"ms_per_step"' <<<"$out" || fail "$bench printed no timing: $out"
done
ok
finish
