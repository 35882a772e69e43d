#!/usr/bin/env bash
# `ddpm evaluate` end to end: a tiny clean classifier trained for a few steps scores
# sample archives made from the Fashion-MNIST test set.
#  - The second half of the test set, as samples, is exactly the floor's set: the
#    distance must equal the floor, and the accuracy must beat chance by far.
#  - Uniform noise is far from the test set; shifted labels lose the accuracy.
#  - int32 and int64 labels read alike; --crop undoes a padding to 32x32; bad archives
#    and classifiers get errors.
source "$(dirname "$0")/lib_e2e.sh"
TEST=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
[ -f "$TEST" ] || skip "no Fashion-MNIST test set ($TEST)"
"$PY" -c "import numpy" 2>/dev/null || skip "$PY has no numpy"
cd "$WORK"
cat >clf.json <<JSON
{"objective": "classifier", "num_classes": 10, "classifier_t_max": 1, "image_size": 28,
 "in_channels": 1, "out_channels": 1, "ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1,
 "attn_resolutions": [], "groups": 8, "dropout": 0, "dataset": "fashion_mnist",
 "data_path": "$FASHION", "batch_size": 32, "steps": 150, "lr": 2e-3, "warmup": 10,
 "ema_decay": 0.9, "log_every": 50, "sample_n": 0, "out_dir": "clf"}
JSON
"$DDPM" train --config clf.json >train.log 2>&1 || fail "training the classifier: $(tail -3 train.log)"
CLF=clf/ckpt_00000150.safetensors
"$PY" - "$TEST" <<'PY' || fail "making the archives"
import gzip, sys, numpy as np
path = sys.argv[1]
images = np.frombuffer(gzip.open(path).read()[16:], np.uint8).reshape(-1, 28, 28, 1)
labels = np.frombuffer(gzip.open(path.replace("images-idx3", "labels-idx1")).read()[8:], np.uint8)
half = slice(5000, 5400)
np.savez("real.npz", images[half], labels[half].astype(np.int64))
np.savez("real32.npz", images[half], labels[half].astype(np.int32))
np.savez("shifted.npz", images[half], ((labels[half] + 1) % 10).astype(np.int64))
np.savez("unlabelled.npz", images[half])
np.savez("padded.npz", np.pad(images[half], ((0, 0), (2, 2), (2, 2), (0, 0))), labels[half].astype(np.int64))
rng = np.random.default_rng(0)
np.savez("noise.npz", rng.integers(0, 256, (400, 28, 28, 1), dtype=np.uint8), labels[half].astype(np.int64))
np.savez("big.npz", np.zeros((4, 32, 32, 1), np.uint8))
np.savez("badlabel.npz", images[:4], np.array([0, 1, 2, 10]))
open("notzip.npz", "w").write("not a zip archive")
PY
field() { sed -n "s/.*\"$1\": \([-0-9.enul]*\).*/\1/p" "$2"; }
"$DDPM" evaluate --classifier "$CLF" --samples real.npz --json real.json >real.out 2>&1 ||
    fail "evaluate real: $(cat real.out)"
"$DDPM" evaluate --classifier "$CLF" --samples real32.npz >real32.out 2>&1 || fail "int32 labels"
fd=$(field frechet real.json) floor=$(field frechet_floor real.json) acc=$(field accuracy real.json)
[ "$fd" = "$floor" ] || fail "the floor's own images give $fd, floor $floor (should be equal)"
ok
awk -v a="$acc" 'BEGIN { exit !(a > 0.5) }' || fail "accuracy $acc on test images after 150 steps"
ok
grep -q "\"accuracy\": $acc" real32.out || fail "int32 labels give another accuracy: $(cat real32.out)"
ok
"$DDPM" evaluate --classifier "$CLF" --samples noise.npz --json noise.json >/dev/null 2>&1 || fail "noise"
awk -v d="$(field frechet noise.json)" -v f="$floor" 'BEGIN { exit !(d > 10 * f && d > 1) }' ||
    fail "noise is not far from the test set: $(cat noise.json)"
ok
"$DDPM" evaluate --classifier "$CLF" --samples shifted.npz --json shifted.json >/dev/null 2>&1 || fail "shifted"
awk -v s="$(field accuracy shifted.json)" -v a="$acc" 'BEGIN { exit !(s < a - 0.3) }' ||
    fail "shifted labels keep the accuracy: $(cat shifted.json)"
ok
"$DDPM" evaluate --classifier "$CLF" --samples unlabelled.npz --json none.json >/dev/null 2>&1 || fail "no labels"
grep -q '"accuracy": null' none.json || fail "no arr_1 should give accuracy null: $(cat none.json)"
ok
"$DDPM" evaluate --classifier "$CLF" --samples padded.npz --crop --json padded.json >/dev/null 2>&1 || fail "--crop"
[ "$(field frechet padded.json)" = "$fd" ] && [ "$(field accuracy padded.json)" = "$acc" ] ||
    fail "--crop of zero-padded 32x32 images is not the 28x28 result: $(cat padded.json)"
ok
expect_error "wrong image size" "big.npz: samples are 32x32x1" "$DDPM" evaluate --classifier "$CLF" --samples big.npz
expect_error "label out of range" "badlabel.npz: label 10" "$DDPM" evaluate --classifier "$CLF" --samples badlabel.npz
expect_error "not a zip" "notzip.npz: cannot open" "$DDPM" evaluate --classifier "$CLF" --samples notzip.npz
expect_error "missing archive" "--samples are required" "$DDPM" evaluate --classifier "$CLF"
sed 's/"classifier"/"ddpm"/' clf.json >ddpm.json
"$DDPM" train --config ddpm.json steps=1 out_dir=ddpm >/dev/null 2>&1 || fail "one DDPM step"
expect_error "a DDPM as the classifier" "not a classifier" "$DDPM" evaluate --classifier ddpm/ckpt_00000001.safetensors --samples real.npz
finish
