#!/usr/bin/env bash
# Learned variances end to end: a hybrid-loss run with importance-sampled timesteps
# resumes bit-identically; DDIM, respaced sampling, x_T files, inversion and eval work
# from the command line.
source tests/lib_e2e.sh
args=(--config "$ROOT/configs/tiny" learn_sigma=true out_channels=2 loss=hybrid
      timestep_sampler=loss_second_moment beta_schedule=cosine timesteps=10 data_limit=128
      log_every=1 ckpt_every=0 sample_n=2 out_dir=run)
mkdir -p "$WORK/a" "$WORK/b"
(cd "$WORK/a" && "$DDPM" train "${args[@]}" steps=16 2>/dev/null) || fail "16-step run"
(cd "$WORK/b" && "$DDPM" train "${args[@]}" steps=8 sample_n=0 2>/dev/null) || fail "8-step run"
(cd "$WORK/b" && "$DDPM" train "${args[@]}" steps=16 sample_n=0 --resume 2>/dev/null) || fail "resume"
"$PY" - "$WORK/a/run/ckpt_00000016.safetensors" "$WORK/b/run/ckpt_00000016.safetensors" <<'PY' || fail "resumed hybrid run differs"
import json, struct, sys
def tensors(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    header.pop("__metadata__")
    return {k: data[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]] for k, v in header.items()}
a, b = tensors(sys.argv[1]), tensors(sys.argv[2])
assert "timestep_sampler.history" in a, "the sampler's loss history is not checkpointed"
assert a.keys() == b.keys() and all(a[k] == b[k] for k in a), "tensors differ"
PY
cut -d, -f1-3,11 "$WORK/a/run/log.csv" >"$WORK/la" && cut -d, -f1-3,11 "$WORK/b/run/log.csv" >"$WORK/lb"
diff "$WORK/la" "$WORK/lb" >&2 || fail "losses differ after resume"
[ "$(tail -1 "$WORK/la" | cut -d, -f4)" != "nan" ] || fail "L_t not logged"
ok

ckpt="$WORK/a/run/ckpt_00000016.safetensors"
s() { "$DDPM" sample --ckpt "$ckpt" --n 3 "$@" 2>/dev/null; }
s --sampler ddim --steps 5 --seed 1 --save-noise "$WORK/xT.npy" --out "$WORK/d1" || fail "ddim sample"
s --sampler ddim --steps 5 --noise "$WORK/xT.npy" --seed 2 --out "$WORK/d2" || fail "ddim from x_T"
cmp -s "$WORK/d1/samples.png" "$WORK/d2/samples.png" || fail "DDIM from the same x_T gives other images"
s --steps 5 --seed 1 --out "$WORK/r1" || fail "respaced ancestral"
s --steps 3,2 --seed 1 --out "$WORK/r2" || fail "respaced by sections"
s --sampler ddim --eta 1 --steps ddim5 --out "$WORK/r3" || fail "ddimN spacing"
expect_error "bad spacing" "timestep spacing '99'" "$DDPM" sample --ckpt "$ckpt" --steps 99 --out "$WORK/x"
expect_error "bad eta" "eta = 2" "$DDPM" sample --ckpt "$ckpt" --sampler ddim --eta 2 --out "$WORK/x"
printf 'not numpy' >"$WORK/bad.npy"
expect_error "bad noise file" "$WORK/bad.npy" "$DDPM" sample --ckpt "$ckpt" --noise "$WORK/bad.npy" --out "$WORK/x"
ok

"$DDPM" invert --ckpt "$ckpt" --images "$WORK/xT.npy" --out "$WORK/inv.npy" --steps 5 2>/dev/null ||
    fail "invert"
"$PY" -c "import numpy, sys; a = numpy.load(sys.argv[1]); assert a.shape == (3, 32, 32, 1) and a.dtype == numpy.float32 and numpy.isfinite(a).all()" "$WORK/inv.npy" ||
    fail "inverted x_T"
ok

test_set=/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz
out=$("$DDPM" eval --ckpt "$ckpt" --data "$test_set" --n 4 --csv "$WORK/terms.csv" 2>/dev/null) || fail "eval"
grep -q "bound (every timestep): [0-9.]* bits/dim" <<<"$out" || fail "eval output: $out"
[ "$(wc -l <"$WORK/terms.csv")" -eq 12 ] || fail "terms CSV: prior + 10 timesteps + header"
"$PY" - "$WORK/terms.csv" "$out" <<'PY' || fail "the CSV terms do not sum to the bound"
import csv, re, sys
rows = list(csv.DictReader(open(sys.argv[1])))
total = sum(float(r["bits_per_dim"]) for r in rows)
bound = float(re.search(r"bound \(every timestep\): ([0-9.]+)", sys.argv[2]).group(1))
assert abs(total - bound) < 1e-5 * bound, (total, bound)
PY
mc=$("$DDPM" eval --ckpt "$ckpt" --data "$test_set" --n 4 --mc 3 2>/dev/null) || fail "eval --mc"
grep -q "Monte Carlo" <<<"$mc" || fail "eval --mc output: $mc"
ok
finish
