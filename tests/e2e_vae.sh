#!/usr/bin/env bash
# Latent diffusion end to end, on a tiny autoencoder (8/16 channels, 32x32 -> 16x16x2):
#   - objective=vae trains, and a resumed run (learned logvar, flips) ends with the bytes
#     of a straight one;
#   - `ddpm export` gives a folder AutoencoderKL.from_pretrained loads with no missing or
#     unexpected key, whose posterior means equal `ddpm encode`'s latents (diffusers
#     from .venv-diffusers or DDPM_DIFFUSERS_PYTHON; that part is skipped without it);
#   - `ddpm encode` measures scaling_factor over 2000 images, records it in the
#     checkpoint, and held-out latents scaled by it have a std in [0.9, 1.1];
#   - a DDPM trains on the latent file unchanged, and `ddpm sample --vae` writes the
#     pixel grid and npz;
#   - bad input: --vae with a pixel model, a VAE whose latent does not fit the latent
#     model, a latent file that does not fit the config, a DDPM as --vae of encode, too
#     few images to measure the factor.
source tests/lib_e2e.sh
export OMP_NUM_THREADS=1
TEST_IMAGES=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
vae=(--config "$ROOT/configs/fashion_vae_cpu" ch=8 ch_mult=[1,2] num_res_blocks=1 groups=4
     latent_channels=2 data_limit=64 batch_size=8 log_every=1 sample_n=0 learn_logvar=true)
cd "$WORK"

# ---- training and resume ----
mkdir -p straight resumed
(cd straight && "$DDPM" train "${vae[@]}" out_dir=run steps=6 ckpt_every=3 2>../train.log) ||
    fail "vae training: $(tail -3 train.log)"
(cd resumed && "$DDPM" train "${vae[@]}" out_dir=run steps=3 ckpt_every=3 2>/dev/null &&
    "$DDPM" train "${vae[@]}" out_dir=run steps=6 ckpt_every=3 --resume 2>/dev/null) ||
    fail "resumed vae run"
cmp straight/run/ckpt_00000006.safetensors resumed/run/ckpt_00000006.safetensors ||
    fail "a resumed autoencoder run differs from a straight one"
diff <(cut -d, -f1-3 straight/run/log.csv) <(cut -d, -f1-3 resumed/run/log.csv) >&2 ||
    fail "losses differ between the straight and resumed autoencoder runs"
ok
VAE=straight/run/ckpt_00000006.safetensors

# ---- encode: the factor over 2000 images, recorded; held-out std ----
"$DDPM" encode --vae "$VAE" --out train.safetensors --limit 2000 2>encode.log ||
    fail "encode: $(tail -3 encode.log)"
factor=$(sed -n 's/.*scaling_factor \([0-9.e+-]*\) (measured).*/\1/p' encode.log)
[ -n "$factor" ] || fail "encode did not report a measured scaling_factor: $(cat encode.log)"
"$DDPM" encode --vae "$VAE" --out heldout.safetensors --data "$TEST_IMAGES" --limit 500 \
    --scaling-factor "$factor" 2>/dev/null || fail "encoding held-out images"
"$PY" - train.safetensors heldout.safetensors "$VAE" "$factor" "$ROOT/tools" <<'PY' || fail "scale check"
import json, sys
sys.path.insert(0, sys.argv[5])
import numpy as np
import st_io
train, tmeta = st_io.read(sys.argv[1])
held, _ = st_io.read(sys.argv[2])
_, vmeta = st_io.read(sys.argv[3])
factor = float(sys.argv[4])
assert train["latents"].shape == (2000, 16, 16, 2), train["latents"].shape
assert train["labels"].shape == (2000,) and train["labels"].max() <= 9
assert abs(float(tmeta["scaling_factor"]) / factor - 1) < 1e-6, tmeta
recorded = json.loads(vmeta["config"])["scaling_factor"]
assert abs(recorded / factor - 1) < 1e-6, f"checkpoint records {recorded}, encode measured {factor}"
s_train, s_held = train["latents"].std(), held["latents"].std()
print(f"scaling_factor {factor}: std of scaled train latents {s_train:.4f}, held-out {s_held:.4f}")
assert abs(s_train - 1) < 1e-3 and 0.9 <= s_held <= 1.1
PY
ok

# ---- export into diffusers' AutoencoderKL ----
DIFFUSERS_PY=${DDPM_DIFFUSERS_PYTHON:-$ROOT/.venv-diffusers/bin/python}
if [ -x "$DIFFUSERS_PY" ] && "$DIFFUSERS_PY" -c "import diffusers, torch" 2>/dev/null; then
    "$DDPM" export --ckpt "$VAE" --out vae.diffusers 2>/dev/null || fail "export of the autoencoder"
    "$DDPM" encode --vae "$VAE" --out first8.safetensors --limit 8 --scaling-factor 0.5 \
        2>/dev/null || fail "encoding 8 images"
    "$DDPM" export --ckpt "$VAE" --out vae8.diffusers 2>/dev/null || fail "export after encode"
    "$DIFFUSERS_PY" "$ROOT/tests/vae_diffusers_check.py" vae8.diffusers first8.safetensors \
        "$FASHION" 0.5 >check.log 2>&1 || fail "AutoencoderKL: $(tail -5 check.log)"
    cat check.log
    ok
else
    echo "e2e_vae: AutoencoderKL check skipped: no diffusers at $DIFFUSERS_PY"
    tests_skipped=1
fi

# ---- a DDPM on the latents, sampled and decoded ----
ldm=(--config "$ROOT/configs/tiny" dataset=latents data_path="$WORK/train.safetensors"
     image_size=16 in_channels=2 out_channels=2 attn_resolutions=[] hflip=false
     clip_denoised=false data_limit=64 batch_size=8 log_every=1 sample_n=0)
"$DDPM" train "${ldm[@]}" out_dir=ldm steps=2 ckpt_every=2 2>ldm.log ||
    fail "latent DDPM training: $(tail -3 ldm.log)"
"$DDPM" sample --ckpt ldm/ckpt_00000002.safetensors --vae "$VAE" --n 3 --steps 4 \
    --out decoded 2>sample.log || fail "sample --vae: $(tail -3 sample.log)"
"$PY" - decoded/samples.npz <<'PY' || fail "decoded samples"
import sys
import numpy as np
x = np.load(sys.argv[1])["arr_0"]
assert x.shape == (3, 32, 32, 1) and x.dtype == np.uint8, (x.shape, x.dtype)
PY
[ -s decoded/samples.png ] || fail "no decoded grid"
"$DDPM" sample --ckpt ldm/ckpt_00000002.safetensors --vae "$VAE" --n 1 --steps 2 --clip 1 \
    --out clipped 2>&1 | grep -q "clamps x0 to \[-1, 1\]" || fail "no warning for clipped latents"
ok

# ---- overfitting 256 images: reconstruction bound, no posterior collapse ----
# 80 steps of 16 at lr 3e-3 give MSE 0.023 (PSNR 16.3 dB) on [0, 1] pixels and 507 of 512
# active units here; the untrained autoencoder's MSE is 0.26. `ddpm reconstruct` of 256
# images at batch 64 also runs the decoder on a last batch smaller than the planned one.
# Under the sanitizers (the second pass of make test) 10 steps look for memory errors only.
overfit_steps=80
[ -n "${DDPM_SANITIZE:-}" ] && overfit_steps=10
"$DDPM" train "${vae[@]}" learn_logvar=false data_limit=256 batch_size=16 steps=$overfit_steps lr=3e-3 \
    warmup=10 ema_decay=0 hflip=false ckpt_every=$overfit_steps log_every=40 out_dir=overfit 2>/dev/null ||
    fail "overfitting run"
"$DDPM" reconstruct --vae "overfit/ckpt_$(printf %08d $overfit_steps).safetensors" --limit 250 --grid 8 \
    --out recon >recon.log 2>&1 || fail "reconstruct: $(tail -3 recon.log)"
cat recon.log | grep reconstruction
[ -n "${DDPM_SANITIZE:-}" ] || "$PY" - recon/reconstruction.json <<'PY' || fail "the autoencoder did not overfit 250 of its 256 images"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["mse"] < 0.035, f"MSE {r['mse']} >= 0.035"
assert r["active_units"] >= r["latent_units"] / 2, f"{r['active_units']} of {r['latent_units']} active"
PY
[ -s recon/reconstructions.png ] || fail "no reconstruction grid"
ok

# ---- bad input ----
"$DDPM" train --config "$ROOT/configs/tiny" data_limit=16 batch_size=8 steps=1 ckpt_every=1 \
    sample_n=0 out_dir=pixel 2>/dev/null || fail "pixel model"
expect_error "--vae with a pixel model" "is a pixel model" \
    "$DDPM" sample --ckpt pixel/ckpt_00000001.safetensors --vae "$VAE" --n 1 --out bad
"$DDPM" train "${vae[@]}" latent_channels=3 out_dir=vae3 steps=1 ckpt_every=1 2>/dev/null ||
    fail "3-channel autoencoder"
expect_error "a VAE whose latent does not fit" "vae3/ckpt_00000001.safetensors has 16x16x3 latents" \
    "$DDPM" sample --ckpt ldm/ckpt_00000002.safetensors --vae vae3/ckpt_00000001.safetensors \
    --n 1 --out bad
expect_error "a latent file that does not fit the config" "train.safetensors" \
    "$DDPM" train "${ldm[@]}" in_channels=4 out_channels=4 out_dir=bad steps=1
expect_error "a DDPM given to encode as --vae" "not an autoencoder checkpoint" \
    "$DDPM" encode --vae pixel/ckpt_00000001.safetensors --out bad.safetensors
expect_error "too few images to measure the factor" "fewer than the 2000" \
    "$DDPM" encode --vae "$VAE" --out bad.safetensors --limit 100
expect_error "a VAE on latents" "trains on images" \
    "$DDPM" train "${vae[@]}" dataset=latents data_path=train.safetensors hflip=false out_dir=bad
finish
