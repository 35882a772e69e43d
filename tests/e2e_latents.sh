#!/usr/bin/env bash
# Float data: a DDPM trains on a latents file (4 channels, 8x8: what an autoencoder's
# encoder would give), its loss falls from the first steps, a resumed run ends with
# the bytes of a straight one, and bad latent files get errors naming them.
source tests/lib_e2e.sh
"$PY" - "$WORK/latents.safetensors" "$WORK/bad.safetensors" <<'PY' || fail "writing latents"
import sys
sys.path.insert(0, "tools")
import numpy as np
import st_io
rng = np.random.default_rng(0)
# smooth structured fields: a mean pattern per class plus small noise
n, labels = 256, rng.integers(0, 3, 256)
base = np.stack([np.sin(np.linspace(0, np.pi * (k + 1), 64)).reshape(8, 8) for k in range(3)])
x = base[labels][..., None] * np.array([1.0, -0.5, 0.8, 0.3]) + 0.1 * rng.standard_normal((n, 8, 8, 4))
st_io.write(sys.argv[1], {"latents": x.astype(np.float32), "labels": labels.astype(np.int64)})
st_io.write(sys.argv[2], {"latents": x[:, :, :, :3].astype(np.float32)})
PY
args=(--config "$ROOT/configs/tiny" dataset=latents data_path="$WORK/latents.safetensors"
      image_size=8 in_channels=4 out_channels=4 ch=16 ch_mult=[1,2] attn_resolutions=[4]
      hflip=false data_limit=0 batch_size=16 log_every=1 ckpt_every=0 sample_n=0 lr=2e-3)
mkdir -p "$WORK/straight" "$WORK/resumed"
(cd "$WORK/straight" && "$DDPM" train "${args[@]}" out_dir=run steps=40 2>"$WORK/train.log") ||
    fail "training on latents: $(tail -3 "$WORK/train.log")"
grep -q "training latents on" "$WORK/train.log" || fail "the run does not say it trains latents"
ok
"$PY" - "$WORK/straight/run/log.csv" <<'PY' || fail "the loss on latents did not fall"
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
loss = [float(r["loss"]) for r in rows]
first, last = sum(loss[:5]) / 5, sum(loss[-5:]) / 5
print(f"latents: mean loss of the first 5 steps {first:.4f}, of the last 5 {last:.4f}")
sys.exit(0 if len(loss) == 40 and last < 0.7 * first else 1)
PY
ok
(cd "$WORK/resumed" && "$DDPM" train "${args[@]}" out_dir=run steps=20 ckpt_every=20 2>/dev/null &&
    "$DDPM" train "${args[@]}" out_dir=run steps=40 ckpt_every=20 --resume 2>/dev/null) ||
    fail "resumed run on latents"
mkdir -p "$WORK/straight2"
(cd "$WORK/straight2" && "$DDPM" train "${args[@]}" out_dir=run steps=40 ckpt_every=20 2>/dev/null) ||
    fail "straight run with checkpoints"
cmp "$WORK/straight2/run/ckpt_00000040.safetensors" "$WORK/resumed/run/ckpt_00000040.safetensors" ||
    fail "a resumed run on latents differs from a straight one"
ok
expect_error "3-channel latents for in_channels 4" "bad.safetensors" \
    "$DDPM" train "${args[@]}" data_path="$WORK/bad.safetensors" out_dir="$WORK/bad" steps=1
expect_error "latents with hflip" "'hflip' must be false" \
    "$DDPM" train "${args[@]}" hflip=true out_dir="$WORK/bad" steps=1
expect_error "images as latents" "needs a float32 tensor 'latents'" \
    "$DDPM" train "${args[@]}" data_path="$ROOT/tests/ref/vlb.safetensors" out_dir="$WORK/bad" steps=1
finish
