#!/usr/bin/env bash
# Flow matching end to end: a tiny rectified-flow model's loss falls on real Fashion-MNIST;
# resume is bit-identical; `ddpm sample` runs euler and heun (and ddim through --convert);
# and the bad inputs of the flow samplers get clear errors.
source tests/lib_e2e.sh
args=(--config "$ROOT/configs/tiny" objective=flow timestep_sampler=logit_normal data_limit=512
      log_every=1 ckpt_every=0 sample_n=2 flow_steps=4 out_dir=run)
mkdir -p "$WORK/straight" "$WORK/resumed"
(cd "$WORK/straight" && "$DDPM" train "${args[@]}" steps=30 2>/dev/null) || fail "30-step flow run"
(cd "$WORK/resumed" && "$DDPM" train "${args[@]}" steps=15 2>/dev/null) || fail "15-step run"
(cd "$WORK/resumed" && "$DDPM" train "${args[@]}" steps=30 --resume 2>/dev/null) || fail "resume"
cmp "$WORK/straight/run/ckpt_00000030.safetensors" "$WORK/resumed/run/ckpt_00000030.safetensors" ||
    fail "flow checkpoints at step 30 differ after resume"
ok
cut -d, -f1-3 "$WORK/straight/run/log.csv" >"$WORK/a.csv"
cut -d, -f1-3 "$WORK/resumed/run/log.csv" >"$WORK/b.csv"
diff "$WORK/a.csv" "$WORK/b.csv" >&2 || fail "losses differ between the straight and resumed runs"
ok
# the loss falls: the mean of the last 10 steps is below 0.6 of the first 10
"$PY" - "$WORK/straight/run/log.csv" <<'PY' || fail "the flow loss did not fall"
import csv, sys
loss = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
first, last = sum(loss[:10]) / 10, sum(loss[-10:]) / 10
print(f"flow loss: first 10 steps {first:.4f}, last 10 {last:.4f}")
assert len(loss) == 30 and last < 0.6 * first
PY
ok
[ -s "$WORK/straight/run/samples.png" ] || fail "the flow run wrote no sample grid"
ok

ckpt="$WORK/straight/run/ckpt_00000030.safetensors"
s() { "$DDPM" sample --ckpt "$ckpt" --n 3 --batch 2 "$@"; }
s --sampler euler --steps 4 --shift 3 --out "$WORK/e" 2>"$WORK/e.log" || fail "euler: $(cat "$WORK/e.log")"
grep -q "euler, 4 steps (4 model evaluations)" "$WORK/e.log" || fail "euler log: $(cat "$WORK/e.log")"
ok
s --sampler heun --steps 3 --out "$WORK/h" 2>"$WORK/h.log" || fail "heun: $(cat "$WORK/h.log")"
grep -q "heun, 3 steps (5 model evaluations)" "$WORK/h.log" || fail "heun log: $(cat "$WORK/h.log")"
ok
s --sampler ddim --steps ddim4 --convert --out "$WORK/d" 2>"$WORK/d.log" || fail "ddim --convert"
grep -q "ddim (converted)" "$WORK/d.log" || fail "ddim --convert log: $(cat "$WORK/d.log")"
ok
"$PY" - "$WORK" <<'PY' || fail "flow samples"
import sys, numpy as np
w = sys.argv[1]
for d in ("e", "h", "d"):
    a = np.load(f"{w}/{d}/samples.npz")["arr_0"]
    assert a.shape == (3, 32, 32, 1) and a.dtype == np.uint8 and a.std() > 0, (d, a.shape, a.std())
PY
ok

# a DDPM checkpoint for the other direction
(cd "$WORK" && "$DDPM" train --config "$ROOT/configs/tiny" data_limit=32 steps=1 sample_n=0 \
    ckpt_every=0 out_dir=ddpm 2>/dev/null) || fail "ddpm run"
ddpm_ckpt="$WORK/ddpm/ckpt_00000001.safetensors"
"$DDPM" sample --ckpt "$ddpm_ckpt" --n 2 --sampler heun --steps 2 --convert --out "$WORK/c" \
    2>/dev/null || fail "heun --convert on a DDPM checkpoint"
ok

expect_error "euler on a DDPM checkpoint" "add --convert" \
    "$DDPM" sample --ckpt "$ddpm_ckpt" --n 2 --sampler euler --out "$WORK/x"
expect_error "ddim on a flow checkpoint" "add --convert" \
    "$DDPM" sample --ckpt "$ckpt" --n 2 --sampler ddim --out "$WORK/x"
expect_error "ancestral on a flow checkpoint" "objective=flow" \
    "$DDPM" sample --ckpt "$ckpt" --n 2 --out "$WORK/x"
expect_error "shift 0" "--shift 0: the shift must be a number > 0" \
    "$DDPM" sample --ckpt "$ckpt" --sampler euler --shift 0 --out "$WORK/x"
expect_error "negative shift" "the shift must be a number > 0" \
    "$DDPM" sample --ckpt "$ckpt" --sampler heun --shift -2 --out "$WORK/x"
expect_error "shift without a flow sampler" "--shift applies to the flow samplers" \
    "$DDPM" sample --ckpt "$ddpm_ckpt" --sampler ddim --shift 3 --out "$WORK/x"
expect_error "0 steps" "--steps '0'" \
    "$DDPM" sample --ckpt "$ckpt" --sampler euler --steps 0 --out "$WORK/x"
expect_error "steps as a spacing" "--steps 'ddim5'" \
    "$DDPM" sample --ckpt "$ckpt" --sampler heun --steps ddim5 --out "$WORK/x"
expect_error "unknown sampler" "ancestral, ddim, euler or heun" \
    "$DDPM" sample --ckpt "$ckpt" --sampler rk4 --out "$WORK/x"
expect_error "logit_normal for ddpm" "logit_normal needs objective=flow" \
    "$DDPM" train --config "$ROOT/configs/tiny" timestep_sampler=logit_normal steps=1
expect_error "flow with learned variances" "objective=flow predicts the velocity" \
    "$DDPM" train --config "$ROOT/configs/tiny" objective=flow learn_sigma=true out_channels=2 loss=hybrid steps=1
expect_error "flow with the importance sampler" "loss_second_moment is for objective=ddpm" \
    "$DDPM" train --config "$ROOT/configs/tiny" objective=flow timestep_sampler=loss_second_moment steps=1
expect_error "eval of a flow checkpoint" "eval computes DDPM bits/dim" \
    "$DDPM" eval --ckpt "$ckpt" --data "$FASHION" --n 4
expect_error "export of a flow checkpoint" "export writes a DDPMPipeline" \
    "$DDPM" export --ckpt "$ckpt" --out "$WORK/exported"
# classifier-free guidance on a flow model: a class-conditional flow run resumes bit for bit
# with label dropout, and its grid and guided euler/heun samples carry the classes
cargs=("${args[@]}" num_class_embeds=11 class_dropout=0.3 sample_n=4)
mkdir -p "$WORK/cstraight" "$WORK/cresumed"
(cd "$WORK/cstraight" && "$DDPM" train "${cargs[@]}" steps=6 2>/dev/null) || fail "conditional flow run"
(cd "$WORK/cresumed" && "$DDPM" train "${cargs[@]}" steps=3 2>/dev/null) || fail "conditional 3 steps"
(cd "$WORK/cresumed" && "$DDPM" train "${cargs[@]}" steps=6 --resume 2>/dev/null) || fail "conditional resume"
cmp "$WORK/cstraight/run/ckpt_00000006.safetensors" "$WORK/cresumed/run/ckpt_00000006.safetensors" ||
    fail "conditional flow checkpoints differ after resume"
ok
# the flow objective feeds the labels: every class row of the embedding trains (an unfed input
# would leave all but one row where initialisation put them; weight decay is 0)
"$PY" - "$ROOT/tools" "$WORK/cresumed/run" <<'PY' || fail "the class embedding's rows did not train"
import sys; sys.path.insert(0, sys.argv[1]); import st_io
a, _ = st_io.read(sys.argv[2] + "/ckpt_00000003.safetensors")
b, _ = st_io.read(sys.argv[2] + "/ckpt_00000006.safetensors")
moved = sum(int((a["class_embedding.weight"][r] != b["class_embedding.weight"][r]).any()) for r in range(11))
print(f"class embedding rows that trained: {moved} of 11")
assert moved >= 9, moved
PY
ok
cckpt="$WORK/cstraight/run/ckpt_00000006.safetensors"
for sampler in euler heun; do
    "$DDPM" sample --ckpt "$cckpt" --n 10 --batch 5 --sampler $sampler --steps 3 --class all \
        --guidance-scale 3 --out "$WORK/c$sampler" 2>"$WORK/c$sampler.log" ||
        fail "guided $sampler: $(cat "$WORK/c$sampler.log")"
    grep -q "classifier-free guidance (batch doubled)" "$WORK/c$sampler.log" ||
        fail "guided $sampler log: $(cat "$WORK/c$sampler.log")"
    "$PY" -c "import numpy as np, sys; l = np.load(sys.argv[1])['arr_1']; assert list(l) == list(range(10)), l" \
        "$WORK/c$sampler/samples.npz" || fail "guided $sampler: arr_1 is not the classes"
    ok
done
finish
