#!/usr/bin/env bash
# Classifier guidance from the command line: a tiny DDPM and a tiny noisy classifier
# (configs/tiny), sampled with --classifier under DDIM and respaced ancestral sampling.
#  - scale 0 gives the unguided images bit for bit (the classifier is not even asked);
#  - --class all writes one row per class and the labels as arr_1;
#  - a guided run differs from the unguided one;
#  - bad input: a classifier of another size, a DDPM as the classifier, the scale without
#    a classifier, --class on an unconditional model without a classifier.
source "$(dirname "$0")/lib_e2e.sh"
cd "$WORK"
TINY="$ROOT/configs/tiny"
"$DDPM" train --config "$TINY" steps=4 out_dir=ddpm sample_n=0 >ddpm.log 2>&1 || fail "ddpm: $(tail -3 ddpm.log)"
"$DDPM" train --config "$TINY" objective=classifier num_classes=10 steps=4 out_dir=clf sample_n=0 \
    >clf.log 2>&1 || fail "classifier: $(tail -3 clf.log)"
"$DDPM" train --config "$TINY" objective=classifier num_classes=10 steps=1 out_dir=clf64 \
    image_size=64 sample_n=0 >clf64.log 2>&1 || fail "64x64 classifier: $(tail -3 clf64.log)"
DDPM_CKPT=ddpm/ckpt_00000004.safetensors CLF=clf/ckpt_00000004.safetensors
common=(--ckpt "$DDPM_CKPT" --n 10 --batch 5 --seed 3)
"$PY" -c "import numpy" 2>/dev/null || skip "$PY has no numpy"
same() { "$PY" -c "import numpy as np, sys; a, b = (np.load(f)['arr_0'] for f in sys.argv[1:3]); sys.exit(0 if (a == b).all() else 1)" "$1" "$2"; }
for sampler in "--sampler ddim --steps ddim10" "--sampler ancestral --steps 10"; do
    # shellcheck disable=SC2086
    "$DDPM" sample "${common[@]}" $sampler --out plain >/dev/null 2>&1 || fail "plain $sampler"
    # shellcheck disable=SC2086
    "$DDPM" sample "${common[@]}" $sampler --out zero --classifier "$CLF" --classifier-scale 0 \
        --class all >/dev/null 2>&1 || fail "scale 0 $sampler"
    same plain/samples.npz zero/samples.npz || fail "$sampler: scale 0 changed the images"
    ok
    # shellcheck disable=SC2086
    "$DDPM" sample "${common[@]}" $sampler --out guided --classifier "$CLF" --classifier-scale 50 \
        --class all >guided.log 2>&1 || fail "guided $sampler: $(tail -3 guided.log)"
    grep -q "classifier guidance: $CLF at scale 50" guided.log || fail "no guidance line: $(cat guided.log)"
    ! same plain/samples.npz guided/samples.npz || fail "$sampler: guidance at scale 50 changed nothing"
    "$PY" -c "import numpy as np; l = np.load('guided/samples.npz')['arr_1']; assert list(l) == list(range(10)), l" ||
        fail "$sampler: arr_1 is not the classes 0..9"
    ok
done
expect_error "a classifier of another size" "it reads 64x64x1 images" \
    "$DDPM" sample "${common[@]}" --classifier clf64/ckpt_00000001.safetensors --class 1
expect_error "a DDPM as the classifier" "not a classifier" \
    "$DDPM" sample "${common[@]}" --classifier "$DDPM_CKPT" --class 1
expect_error "scale without classifier" "--classifier-scale needs --classifier" \
    "$DDPM" sample "${common[@]}" --classifier-scale 2
expect_error "--class without a classifier" "unconditional model" \
    "$DDPM" sample "${common[@]}" --class 1
expect_error "a class the classifier lacks" "is not a class of $CLF" \
    "$DDPM" sample "${common[@]}" --classifier "$CLF" --class 10
expect_error "no --class" "--class is required" \
    "$DDPM" sample "${common[@]}" --classifier "$CLF"
expect_error "a class-conditional classifier" "objective = classifier has no class input" \
    "$DDPM" train --config "$TINY" objective=classifier num_classes=10 num_class_embeds=11 steps=1 out_dir=bad
finish
