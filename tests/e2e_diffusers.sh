#!/usr/bin/env bash
# `ddpm export` folders loaded by real diffusers (tests/diffusers_check.py): two short runs,
# the tiny config (eps, linear, fixed_small) and a learned-variance one (cosine, v,
# learned_range), exported; UNet2DModel and DDPMPipeline load them; diffusers' U-Net
# output equals `ddpm forward` within 1e-5 relative; the scheduler's arrays equal
# `ddpm schedule`'s.
# diffusers comes from the virtual environment that .ci/run makes (.venv-diffusers:
# pinned diffusers over Debian's python3-torch); DDPM_DIFFUSERS_PYTHON names another.
# Without it the test is skipped, never passed.
source tests/lib_e2e.sh
export OMP_NUM_THREADS=1   # tiny models: one thread is fastest on a shared machine
DIFFUSERS_PY=${DDPM_DIFFUSERS_PYTHON:-$ROOT/.venv-diffusers/bin/python}
[ -x "$DIFFUSERS_PY" ] || skip "no diffusers environment at $DIFFUSERS_PY (.ci/run makes it)"
"$DIFFUSERS_PY" -c "import diffusers, torch" 2>/dev/null ||
    skip "$DIFFUSERS_PY cannot import diffusers and torch"
cd "$WORK"

"$PY" -c "
import numpy as np
rng = np.random.default_rng(0)
np.save('x1.npy', rng.standard_normal((4, 32, 32, 1)).astype(np.float32))
open('t.txt', 'w').write('0 1 500 999\n')" || fail "writing the inputs"

# forward_class / labels_file: the class ids of a class-conditional model's check
forward_class=()
labels_file=()
check_config() {
    local name=$1
    shift
    "$DDPM" train --config "$ROOT/configs/tiny" steps=3 ckpt_every=3 sample_n=0 data_limit=64 \
        out_dir="$name" "$@" 2>/dev/null || fail "$name: training"
    local ckpt=$name/ckpt_00000003.safetensors
    "$DDPM" export --ckpt "$ckpt" --out "$name.diffusers" 2>/dev/null || fail "$name: export"
    "$DDPM" forward --ckpt "$ckpt" --x x1.npy --t 0,1,500,999 "${forward_class[@]}" --out "$name.y.npy" ||
        fail "$name: ddpm forward"
    "$DDPM" schedule --config "$name/config.json" >"$name.schedule.csv" || fail "$name: schedule"
    "$DIFFUSERS_PY" "$ROOT/tests/diffusers_check.py" "$name.diffusers" x1.npy t.txt \
        "$name.y.npy" "$name.schedule.csv" "${labels_file[@]}" >"$name.log" 2>&1 || fail "$name: $(grep -v '^ ' "$name.log" | tail -5)"
    grep -E "relative error" "$name.log" | sed "s/^/$name: /"
    ok
}
check_config eps_linear
check_config v_cosine_learned beta_schedule=cosine prediction=v learn_sigma=true out_channels=2 \
    loss=hybrid ch_mult=[1,2,2] attn_resolutions=[8]
# class-conditional: UNet2DModel(num_class_embeds=11) with the last row the null class
echo '3 10 0 3' >labels.txt
forward_class=(--class 3,10,0,3)
labels_file=(labels.txt)
check_config class_conditional num_class_embeds=11 class_dropout=0.1
# and back: the import keeps the class embedding and its null class
"$DDPM" import class_conditional.diffusers --out imported.safetensors 2>/dev/null ||
    fail "importing the class-conditional export"
"$DDPM" forward --ckpt imported.safetensors --x x1.npy --t 0,1,500,999 --class 3,10,0,3 \
    --out imported.y.npy || fail "forward of the imported class-conditional model"
"$PY" -c "
import numpy as np, sys
a, b = np.load('imported.y.npy'), np.load('class_conditional.y.npy')
sys.exit(0 if (a == b).all() else 1)" || fail "the imported class-conditional model differs"
ok
finish
