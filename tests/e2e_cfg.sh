#!/usr/bin/env bash
# Class conditioning and classifier-free guidance end to end (guidance.h):
#  - resume stays bit-identical with labels and label dropout (20 steps = 10 + 10), and the
#    dropout does change training (class_dropout 0.5 vs 0);
#  - `ddpm sample --class all --guidance-scale S` writes arr_1 with the labels, one row per
#    class; s = 1 equals the conditional samples of a plain --class list; s = 2 differs;
#  - bad input: labels outside the classes (naming the label file), --class on an
#    unconditional checkpoint, a class out of range, a conditional checkpoint without
#    --class, a guidance scale on a model without a null class, --class all that does not
#    divide --n.
source tests/lib_e2e.sh
export OMP_NUM_THREADS=1   # tiny models: one thread is fastest on a shared machine
cond=(--config "$ROOT/configs/tiny" data_limit=256 log_every=1 ckpt_every=0 sample_n=0
      num_class_embeds=11 class_dropout=0.5 out_dir=run)
mkdir -p "$WORK/straight" "$WORK/resumed" "$WORK/nodrop"
(cd "$WORK/straight" && "$DDPM" train "${cond[@]}" steps=20 2>/dev/null) || fail "20-step run"
(cd "$WORK/resumed" && "$DDPM" train "${cond[@]}" steps=10 2>/dev/null) || fail "10-step run"
(cd "$WORK/resumed" && "$DDPM" train "${cond[@]}" steps=20 --resume 2>"$WORK/resume.log") ||
    fail "resumed run: $(cat "$WORK/resume.log")"
cmp "$WORK/straight/run/ckpt_00000020.safetensors" "$WORK/resumed/run/ckpt_00000020.safetensors" ||
    fail "class-conditional checkpoints at step 20 differ after a resume"
ok
(cd "$WORK/nodrop" && "$DDPM" train "${cond[@]}" steps=20 class_dropout=0 num_class_embeds=10 \
    2>/dev/null) || fail "run without label dropout"
cut -d, -f2 "$WORK/straight/run/log.csv" | tail -5 >"$WORK/a.csv"
cut -d, -f2 "$WORK/nodrop/run/log.csv" | tail -5 >"$WORK/b.csv"
! cmp -s "$WORK/a.csv" "$WORK/b.csv" || fail "label dropout 0.5 left the losses unchanged"
ok

ckpt=$WORK/straight/run/ckpt_00000020.safetensors
fast=(--sampler ddim --steps ddim5 --seed 3)
"$DDPM" sample --ckpt "$ckpt" "${fast[@]}" --n 20 --class all --guidance-scale 2 --out "$WORK/s2" \
    2>/dev/null || fail "guided sampling"
"$DDPM" sample --ckpt "$ckpt" "${fast[@]}" --n 20 --class all --out "$WORK/s1" 2>/dev/null ||
    fail "conditional sampling"
"$DDPM" sample --ckpt "$ckpt" "${fast[@]}" --n 20 --class 0,0,1,1,2,2,3,3,4,4,5,5,6,6,7,7,8,8,9,9 \
    --guidance-scale 1 --out "$WORK/list" 2>/dev/null || fail "sampling a list of classes"
"$PY" - "$WORK" <<'PYEOF' || fail "samples.npz labels or guidance"
import sys
import numpy as np
w = sys.argv[1]
s1, s2, lst = (np.load(f"{w}/{d}/samples.npz") for d in ("s1", "s2", "list"))
want = np.repeat(np.arange(10), 2)
for z in (s1, s2, lst):
    assert z["arr_1"].dtype == np.int64 and (z["arr_1"] == want).all(), z["arr_1"]
    assert z["arr_0"].shape == (20, 32, 32, 1)
assert (s1["arr_0"] == lst["arr_0"]).all(), "--class all and the same list differ at s = 1"
assert (s1["arr_0"] != s2["arr_0"]).any(), "guidance scale 2 changed nothing"
PYEOF
ok
"$PY" -c "
import struct, zlib, sys
d = open('$WORK/s2/samples.png', 'rb').read()
w, h = struct.unpack('>II', d[16:24])
# 2 columns and 10 rows of 32-pixel images with 2-pixel gaps
sys.exit(0 if (w, h) == (2 * 32 + 3 * 2, 10 * 32 + 11 * 2) else 1)" || fail "--class all is not one row per class"
ok

# ---- bad input ----
expect_error "label outside the classes" "train-labels-idx1-ubyte.gz: label 9" \
    "$DDPM" train "${cond[@]}" steps=1 num_class_embeds=10 out_dir="$WORK/bad"
expect_error "too few rows" "key 'num_class_embeds'" \
    "$DDPM" train "${cond[@]}" steps=1 num_class_embeds=1 out_dir="$WORK/bad"
"$DDPM" train --config "$ROOT/configs/tiny" data_limit=64 steps=1 ckpt_every=1 sample_n=0 \
    out_dir="$WORK/uncond" 2>/dev/null || fail "unconditional run"
expect_error "--class on an unconditional model" "--class" \
    "$DDPM" sample --ckpt "$WORK/uncond/ckpt_00000001.safetensors" --class 1 --n 2 --out "$WORK/x"
expect_error "--guidance-scale on an unconditional model" "--guidance-scale" \
    "$DDPM" sample --ckpt "$WORK/uncond/ckpt_00000001.safetensors" --guidance-scale 3 --n 2 --out "$WORK/x"
expect_error "class out of range" "--class: '10'" \
    "$DDPM" sample --ckpt "$ckpt" --class 10 --n 2 --out "$WORK/x"
expect_error "conditional model without --class" "--class is required" \
    "$DDPM" sample --ckpt "$ckpt" --n 2 --out "$WORK/x"
expect_error "--class all that does not divide --n" "not a multiple of the 10 classes" \
    "$DDPM" sample --ckpt "$ckpt" --class all --n 15 --out "$WORK/x"
expect_error "guidance scale not a number" "--guidance-scale" \
    "$DDPM" sample --ckpt "$ckpt" --class 1 --guidance-scale lots --n 2 --out "$WORK/x"
expect_error "guidance without a null class" "no null class" \
    "$DDPM" sample --ckpt "$WORK/nodrop/run/ckpt_00000020.safetensors" --class 1 \
    --guidance-scale 3 --n 2 --out "$WORK/x"
finish
