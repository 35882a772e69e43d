#!/usr/bin/env bash
# Bad input gets a clear message naming the file or key and the problem, a non-zero
# exit and no crash; an existing checkpoint is never overwritten or damaged.
source tests/lib_e2e.sh
tiny=(--config "$ROOT/configs/tiny" data_limit=64 sample_n=0 log_every=1)

# ---- data files ----
head -c 3000 "$FASHION" >"$WORK/cut.gz"
expect_error "truncated IDX" "$WORK/cut.gz" "$DDPM" train "${tiny[@]}" data_limit=0 data_path="$WORK/cut.gz" out_dir="$WORK/r1"
head -c 64 /dev/zero >"$WORK/labels.idx"; printf '\x00\x00\x08\x01' | dd of="$WORK/labels.idx" conv=notrunc 2>/dev/null
expect_error "wrong IDX magic" "wrong magic" "$DDPM" train "${tiny[@]}" data_path="$WORK/labels.idx" out_dir="$WORK/r1"
expect_error "missing IDX" "$WORK/none.gz" "$DDPM" train "${tiny[@]}" data_path="$WORK/none.gz" out_dir="$WORK/r1"
mkdir -p "$WORK/cifar"
for i in 1 2 3 4 5; do head -c $((3073 * 4)) /dev/urandom >"$WORK/cifar/data_batch_$i.bin"; done
head -c 5000 /dev/urandom >"$WORK/cifar/data_batch_3.bin"
cifar=(dataset=cifar10 in_channels=3 out_channels=3 data_path="$WORK/cifar" out_dir="$WORK/r1")
expect_error "CIFAR batch of a wrong size" "data_batch_3.bin" "$DDPM" train "${tiny[@]}" "${cifar[@]}"
rm "$WORK/cifar/data_batch_3.bin"
expect_error "missing CIFAR batch" "data_batch_3.bin" "$DDPM" train "${tiny[@]}" "${cifar[@]}"

# ---- config values ----
expect_error "unknown key" "unknown key 'learning_rate'" "$DDPM" train "${tiny[@]}" learning_rate=1
expect_error "ill-typed key" "key 'ch' must be an integer" "$DDPM" train "${tiny[@]}" ch=wide
expect_error "out of range" "key 'dropout'" "$DDPM" train "${tiny[@]}" dropout=2
expect_error "bad enum" "key 'beta_schedule'" "$DDPM" train "${tiny[@]}" beta_schedule=exp
expect_error "groups do not divide" "key 'groups'" "$DDPM" train "${tiny[@]}" groups=7
echo '{"ch": 16, "steps": "many"}' >"$WORK/bad_type.json"
expect_error "ill-typed key in a file" "$WORK/bad_type.json: key 'steps'" "$DDPM" train --config "$WORK/bad_type.json"
echo '{"ch": 16,' >"$WORK/bad.json"
expect_error "config that is not JSON" "$WORK/bad.json: not valid JSON" "$DDPM" train --config "$WORK/bad.json"
echo '{"colour": 1}' >"$WORK/unknown.json"
expect_error "unknown key in a file" "$WORK/unknown.json: unknown key 'colour'" "$DDPM" train --config "$WORK/unknown.json"

# ---- a real checkpoint, then damaged copies of it ----
"$DDPM" train "${tiny[@]}" steps=2 out_dir="$WORK/good" 2>/dev/null || fail "2-step run"
ckpt="$WORK/good/ckpt_00000002.safetensors"
[ -f "$ckpt" ] || fail "no checkpoint written"
sum=$(sha256sum "$ckpt" | cut -d' ' -f1)
size=$(stat -c %s "$ckpt")
head -c $((size / 2)) "$ckpt" >"$WORK/cut.safetensors"
expect_error "truncated checkpoint" "$WORK/cut.safetensors" "$DDPM" sample --ckpt "$WORK/cut.safetensors" --out "$WORK/s"
head -c 4 "$ckpt" >"$WORK/tiny.safetensors"
expect_error "4-byte checkpoint" "$WORK/tiny.safetensors" "$DDPM" sample --ckpt "$WORK/tiny.safetensors" --out "$WORK/s"
{ printf '\xff\xff\xff\xff\x00\x00\x00\x00'; tail -c +9 "$ckpt"; } >"$WORK/len.safetensors"
expect_error "bad header length" "$WORK/len.safetensors" "$DDPM" sample --ckpt "$WORK/len.safetensors" --out "$WORK/s"
{ head -c 8 "$ckpt"; printf '{"broken'; tail -c +18 "$ckpt"; } >"$WORK/json.safetensors"
expect_error "bad header JSON" "$WORK/json.safetensors" "$DDPM" sample --ckpt "$WORK/json.safetensors" --out "$WORK/s"
"$PY" - "$ckpt" "$WORK/offsets.safetensors" <<'PY'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
header = json.loads(data[8:8 + n])
header["conv_in.bias"]["data_offsets"][1] += 10**9
text = json.dumps(header).encode()
text += b" " * (-len(text) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(text)) + text + data[8 + n:])
PY
expect_error "offsets out of range" "conv_in.bias" "$DDPM" sample --ckpt "$WORK/offsets.safetensors" --out "$WORK/s"
expect_error "checkpoint of another model" "cannot resume: key 'ch' is 16 in the checkpoint but 32" \
    "$DDPM" train "${tiny[@]}" steps=4 ch=32 groups=8 out_dir="$WORK/good" --resume
[ "$(sha256sum "$ckpt" | cut -d' ' -f1)" = "$sum" ] || fail "the checkpoint changed"
ok
ls "$WORK/good"/*.tmp >/dev/null 2>&1 && fail "temporary files left behind"
ok

# ---- non-finite loss: steps are skipped, then the run stops, keeping the checkpoint ----
out=$(DDPM_FAULT_NONFINITE_FROM_STEP=2 "$DDPM" train "${tiny[@]}" steps=50 ckpt_every=1 \
      keep_ckpts=50 max_bad_steps=3 out_dir="$WORK/nan" 2>&1)
rc=$?
[ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] || fail "diverging run: status $rc: $out"
grep -q "update skipped" <<<"$out" || fail "no skipped-step warning: $out"
grep -q "consecutive non-finite steps" <<<"$out" || fail "no stop message: $out"
ok
last=$(ls "$WORK/nan"/ckpt_*.safetensors | tail -1)
"$DDPM" sample --ckpt "$last" --n 1 --out "$WORK/s2" 2>/dev/null >/dev/null
[ $? -lt 128 ] || fail "the last checkpoint of the stopped run does not load"
"$PY" - "$last" <<'PY' || fail "last checkpoint unreadable"
import json, struct, sys
data = open(sys.argv[1], "rb").read()
n = struct.unpack("<Q", data[:8])[0]
meta = json.loads(data[8:8 + n])["__metadata__"]
assert meta["step"] == "2", meta["step"]   # written before the faults began
PY
ok
finish
