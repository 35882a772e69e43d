#!/usr/bin/env bash
# Resume: 20 steps in one run equal 10 steps, a checkpoint, then 10 more after
# --resume, bit for bit: the whole checkpoint file (weights, EMA, AdamW moments,
# metadata) and every logged loss. Dropout is on, so its RNG is covered too.
source tests/lib_e2e.sh
args=(--config "$ROOT/configs/tiny" dropout=0.1 data_limit=256 log_every=1 ckpt_every=0
      sample_n=0 out_dir=run)
mkdir -p "$WORK/straight" "$WORK/resumed"
(cd "$WORK/straight" && "$DDPM" train "${args[@]}" steps=20 2>/dev/null) || fail "20-step run"
(cd "$WORK/resumed" && "$DDPM" train "${args[@]}" steps=10 2>/dev/null) || fail "10-step run"
[ -f "$WORK/resumed/run/ckpt_00000010.safetensors" ] || fail "no checkpoint at step 10"
(cd "$WORK/resumed" && "$DDPM" train "${args[@]}" steps=20 --resume 2>"$WORK/resume.log") ||
    fail "resumed run: $(cat "$WORK/resume.log")"
grep -q "resumed from run/ckpt_00000010.safetensors at step 10" "$WORK/resume.log" ||
    fail "resume did not pick up the latest checkpoint: $(cat "$WORK/resume.log")"
ok
cmp "$WORK/straight/run/ckpt_00000020.safetensors" "$WORK/resumed/run/ckpt_00000020.safetensors" ||
    fail "checkpoints at step 20 differ"
ok
# step, loss and grad norm of every step (throughput columns differ by nature)
cut -d, -f1-3 "$WORK/straight/run/log.csv" >"$WORK/a.csv"
cut -d, -f1-3 "$WORK/resumed/run/log.csv" >"$WORK/b.csv"
[ "$(wc -l <"$WORK/a.csv")" -eq 21 ] || fail "expected 20 logged steps"
diff "$WORK/a.csv" "$WORK/b.csv" >&2 || fail "losses differ between the straight and resumed runs"
ok
finish
