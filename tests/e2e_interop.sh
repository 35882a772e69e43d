#!/usr/bin/env bash
# diffusers folders without diffusers, and image-folder training:
# - export, import and export again gives the same bytes (also from older diffusers
#   attention names); the imported checkpoint samples
#   and resumes training;
# - folders with a missing, extra or misshapen tensor, or a config the engine's U-Net
#   cannot be, are refused with the key named;
# - `ddpm train dataset=folder` trains on class folders, saves classes.json, and stops on
#   a file that does not decode unless skip_bad_images is set.
# (tests/e2e_diffusers.sh loads the exported folders with real diffusers.)
source tests/lib_e2e.sh
export OMP_NUM_THREADS=1   # tiny models: one thread is fastest on a shared machine
cd "$WORK"

"$DDPM" train --config "$ROOT/configs/tiny" steps=2 ckpt_every=2 sample_n=0 data_limit=64 \
    out_dir=run 2>/dev/null || fail "training the tiny model"
ckpt=run/ckpt_00000002.safetensors

# ---- round trip: same bytes ----
"$DDPM" export --ckpt "$ckpt" --out exported 2>/dev/null || fail "export"
for f in model_index.json unet/config.json unet/diffusion_pytorch_model.safetensors \
    scheduler/scheduler_config.json; do
    [ -s "exported/$f" ] || fail "export did not write $f"
done
ok
"$DDPM" import exported --out imported.safetensors 2>/dev/null || fail "import"
"$DDPM" export --ckpt imported.safetensors --out again 2>/dev/null || fail "export of the import"
diff -r exported again >&2 || fail "export -> import -> export changed the bytes"
ok

# ---- the imported checkpoint samples and fine-tunes ----
"$DDPM" sample --ckpt imported.safetensors --n 2 --steps 5 --out samples 2>/dev/null ||
    fail "sampling from the imported checkpoint"
[ -s samples/samples.png ] || fail "no samples from the imported checkpoint"
ok
mkdir -p tune && cp imported.safetensors tune/ckpt_00000000.safetensors
"$DDPM" train --config "$ROOT/configs/tiny" --resume steps=2 ckpt_every=2 sample_n=0 \
    data_limit=64 out_dir=tune 2>tune.log || fail "fine-tuning from the import: $(cat tune.log)"
grep -q "resumed from tune/ckpt_00000000.safetensors at step 0" tune.log ||
    fail "fine-tuning did not start from the import: $(cat tune.log)"
[ -s tune/ckpt_00000002.safetensors ] || fail "fine-tuning wrote no checkpoint"
ok

# ---- folders that do not fit ----
# edit_tensors DIR PYTHON: rewrites DIR's weights with `t` (dict name -> array) edited.
edit_tensors() {
    rm -rf "$1" && cp -r exported "$1"
    "$PY" - "$ROOT/tools" "$1/unet/diffusion_pytorch_model.safetensors" "$2" <<'EOF' ||
import sys
sys.path.insert(0, sys.argv.pop(1))
import st_io
path, edit = sys.argv[1], sys.argv[2]
t, meta = st_io.read(path)
exec(edit)
st_io.write(path, t, meta)
EOF
        fail "editing $1"
}
edit_tensors missing "del t['conv_in.bias']"
expect_error "missing tensor" "tensor 'conv_in.bias' is missing" "$DDPM" import missing --out x.st
edit_tensors extra "t['extra.weight'] = t['conv_in.bias']"
expect_error "extra tensor" "unexpected tensor 'extra.weight'" "$DDPM" import extra --out x.st
edit_tensors shape "t['conv_out.bias'] = t['conv_in.bias']"
expect_error "wrong shape" "tensor 'conv_out.bias' has shape [16]" "$DDPM" import shape --out x.st
# older diffusers attention names (query, key, value, proj_attn) import to the same model
edit_tensors legacy "
for new, old in [('.to_q.', '.query.'), ('.to_k.', '.key.'), ('.to_v.', '.value.'),
                 ('.to_out.0.', '.proj_attn.')]:
    for k in [k for k in t if new in k]:
        t[k.replace(new, old)] = t.pop(k)
assert any('.proj_attn.' in k for k in t)"
"$DDPM" import legacy --out legacy.safetensors 2>/dev/null || fail "import of legacy names"
"$DDPM" export --ckpt legacy.safetensors --out legacy_again 2>/dev/null || fail "legacy export"
cmp exported/unet/diffusion_pytorch_model.safetensors \
    legacy_again/unet/diffusion_pytorch_model.safetensors || fail "legacy names: other weights"
ok
cp -r exported config && sed -i 's/"freq_shift":\t1/"freq_shift":\t0/' config/unet/config.json
expect_error "wrong freq_shift" "'freq_shift' = 0, the engine's U-Net needs 1" \
    "$DDPM" import config --out x.st
cp -r exported betas && sed -i 's/"beta_end":\t0.02/"beta_end":\t0.03/' \
    betas/scheduler/scheduler_config.json
expect_error "beta range" "'beta_end' = 0.03" "$DDPM" import betas --out x.st
rm exported/model_index.json && rm -r missing/unet/config.json
expect_error "no config" "missing/unet/config.json" "$DDPM" import missing --out x.st
[ ! -e x.st ] || fail "a refused import wrote its output"
ok
expect_error "export without --out" "--out DIR are required" "$DDPM" export --ckpt "$ckpt"
expect_error "export of a missing file" "nothere.safetensors" \
    "$DDPM" export --ckpt nothere.safetensors --out y

# ---- image folders ----
# Two classes of 6 grey 32x32 PNGs each (plain zlib + the PNG chunk layout).
"$PY" - <<'EOF' || fail "writing the image folder"
import os, struct, zlib
import numpy as np
def png(path, pixels):
    h, w = pixels.shape
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data +
                struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))
    raw = b"".join(b"\0" + pixels[y].tobytes() for y in range(h))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
rng = np.random.default_rng(0)
for label, name in enumerate(["boots", "shirts"]):
    os.makedirs(f"folder/{name}")
    for i in range(6):
        png(f"folder/{name}/{i}.png", rng.integers(0, 256, (32, 32), dtype=np.uint8))
EOF
folder_args=(dataset=folder data_path=folder data_limit=0 batch_size=4 steps=2 sample_n=0)
"$DDPM" train --config "$ROOT/configs/tiny" "${folder_args[@]}" out_dir=frun 2>frun.log ||
    fail "training on a folder: $(cat frun.log)"
grep -q "12 images" frun.log || fail "the folder run did not load 12 images: $(cat frun.log)"
"$PY" -c "import json,sys; c=json.load(open('frun/classes.json'))
sys.exit(c['classes'] != ['boots', 'shirts'] or c['counts'] != [6, 6])" ||
    fail "classes.json: $(cat frun/classes.json)"
ok
echo "not a png" >folder/shirts/broken.png
expect_error "corrupt image" "folder/shirts/broken.png: does not decode" \
    "$DDPM" train --config "$ROOT/configs/tiny" "${folder_args[@]}" out_dir=frun2
"$DDPM" train --config "$ROOT/configs/tiny" "${folder_args[@]}" skip_bad_images=true \
    out_dir=frun3 2>frun3.log || fail "skip_bad_images: $(cat frun3.log)"
grep -q "skipped 1 files that do not decode" frun3.log || fail "no skip count: $(cat frun3.log)"
ok
mkdir empty
expect_error "empty folder" "empty: no PNG or JPEG files" \
    "$DDPM" train --config "$ROOT/configs/tiny" "${folder_args[@]}" data_path=empty out_dir=e
finish
