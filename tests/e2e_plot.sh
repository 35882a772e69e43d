#!/usr/bin/env bash
# tools/plot.py on a short run writes four non-empty PNGs (checked by their signature and
# size, and read back by matplotlib), and names the problem when the folder has no log.
# Skipped, never passed, where Debian's python3-matplotlib is missing.
source tests/lib_e2e.sh
export OMP_NUM_THREADS=1   # tiny models: one thread is fastest on a shared machine
"$PY" -c "import matplotlib" 2>/dev/null || skip "$PY has no matplotlib (python3-matplotlib)"
cd "$WORK"
"$DDPM" train --config "$ROOT/configs/tiny" steps=12 log_every=2 warmup=4 sample_n=0 \
    ckpt_every=0 data_limit=64 out_dir=run 2>/dev/null || fail "training"
"$PY" "$ROOT/tools/plot.py" run --ddpm "$DDPM" >plot.log 2>&1 || fail "plot.py: $(cat plot.log)"
for name in loss loss_quartiles grad_lr schedule; do
    png=run/plots/$name.png
    [ "$(head -c 8 "$png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] ||
        fail "$png is not a PNG"
    [ "$(stat -c %s "$png")" -gt 5000 ] || fail "$png is only $(stat -c %s "$png") bytes"
    "$PY" -c "import matplotlib.image as m, sys; a = m.imread(sys.argv[1]); sys.exit(int(a.std() == 0))" \
        "$png" || fail "$png is blank"
    ok
done
mkdir empty
expect_error "no log" "empty/log.csv" "$PY" "$ROOT/tools/plot.py" empty --ddpm "$DDPM"
finish
