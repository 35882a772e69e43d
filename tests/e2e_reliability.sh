#!/usr/bin/env bash
# Reliability: resume checks and fallback, the out_dir lock, partial files, log.csv after a
# resume, strict configs, bad values and data paths, .npy overflow, flags checked before
# the work, and a full disk (a small tmpfs, where the machine lets a user namespace mount).
source tests/lib_e2e.sh
tiny=(--config "$ROOT/configs/tiny" data_limit=64 batch_size=4 ch=8 groups=4 timesteps=50
      log_every=1 sample_n=0 threads=1 --device cpu)
cd "$WORK"

# A 6-step run with checkpoints at 3 and 6, the reference for what follows.
"$DDPM" train "${tiny[@]}" steps=6 ckpt_every=3 out_dir=base 2>/dev/null || fail "base run"
ckpt6=base/ckpt_00000006.safetensors
[ -f "$ckpt6" ] || fail "no checkpoint at step 6"
config_sum=$(sha256sum base/config.json)

# --resume with another model or process fails, names the key, and leaves out_dir alone.
expect_error "resume with other timesteps" "key 'timesteps' is 50 in the checkpoint but 100" \
    "$DDPM" train "${tiny[@]}" steps=8 timesteps=100 out_dir=base --resume
expect_error "resume without attention" "key 'attn_resolutions' is [16] in the checkpoint but []" \
    "$DDPM" train "${tiny[@]}" steps=8 'attn_resolutions=[]' out_dir=base --resume
expect_error "resume with another schedule" "key 'beta_schedule'" \
    "$DDPM" train "${tiny[@]}" steps=8 beta_schedule=cosine out_dir=base --resume
[ "$(sha256sum base/config.json)" = "$config_sum" ] || fail "a failed resume rewrote config.json"
ok

# Another run on the same out_dir is refused while the lock is held.
expect_error "two runs on one out_dir" "another run is using out_dir" \
    flock base/.lock "$DDPM" train "${tiny[@]}" steps=8 out_dir=base --resume
ok

# An unreadable newest checkpoint (a stray file named like one) is set aside; the run resumes
# from the newest one that loads, removes partial files and logs each step once.
cp -r base resumed
echo "not a checkpoint" >resumed/ckpt_00000099.safetensors
head -c 1000 "$ckpt6" >resumed/ckpt_00000009.safetensors.tmp
"$DDPM" train "${tiny[@]}" steps=6 ckpt_every=3 out_dir=resumed --resume 2>resume.log ||
    fail "resume past a stray file: $(tail -3 resume.log)"
grep -q "moved it to resumed/ckpt_00000099.safetensors.unreadable" resume.log ||
    fail "the unreadable checkpoint was not set aside: $(cat resume.log)"
grep -q "resumed from resumed/ckpt_00000006.safetensors at step 6 (the newest checkpoint that loads)" \
    resume.log || fail "did not say which checkpoint it resumed from: $(cat resume.log)"
grep -q "removed 1 partial checkpoint" resume.log || fail "the partial file was not reported"
[ ! -e resumed/ckpt_00000009.safetensors.tmp ] || fail "the partial file is still there"
ok
# Resuming at step 3 a run that logged steps 1..6: steps 4..6 are logged again, once.
rm resumed/ckpt_00000006.safetensors
"$DDPM" train "${tiny[@]}" steps=6 ckpt_every=3 out_dir=resumed --resume 2>/dev/null ||
    fail "resume from step 3"
[ "$(tail -n +2 resumed/log.csv | cut -d, -f1 | tr '\n' ' ')" = "1 2 3 4 5 6 " ] ||
    fail "log.csv steps after the resume: $(cut -d, -f1 resumed/log.csv | tr '\n' ' ')"
ok

# Strict configs, absurd values, bad data paths.
printf '{"ch": 8} trailing' >trailing.json
expect_error "text after the JSON object" "trailing.json: not valid JSON, or text after the object" \
    "$DDPM" train --config trailing.json
printf '{"ch": 8, "steps": 2, "ch": 16}' >twice.json
expect_error "a key given twice" "twice.json: key 'ch' appears twice" "$DDPM" train --config twice.json
mkdir -p confdir
expect_error "--config names a directory" "confdir: not a regular file" "$DDPM" train --config confdir
for bad in ch=100000 image_size=0 batch_size=-1 timesteps=0 lr=nan; do
    expect_error "$bad" "key '${bad%%=*}'" "$DDPM" train "${tiny[@]}" "$bad" out_dir=bad
done
expect_error "a model too big for memory" "give a model that needs at least" \
    "$DDPM" train "${tiny[@]}" ch=4096 groups=32 image_size=1024 batch_size=1024 out_dir=bad
mkfifo fifo
for path in "$WORK" fifo /dev/zero; do
    expect_error "data_path=$path" "not a regular file" timeout 20 "$DDPM" train "${tiny[@]}" \
        data_path="$path" out_dir=bad
done

# A .npy shape whose element count overflows (a 144-byte file) is refused.
"$PY" - <<'PY'
import struct
header = b"{'descr': '<f4', 'fortran_order': False, 'shape': (4427218577690292388, 5, 5, 1), }"
header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
data = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header
open("overflow.npy", "wb").write(data + b"\0" * (144 - len(data)))
PY
expect_error "npy shape overflow (sample)" "overflow.npy: the shape's element count overflows" \
    "$DDPM" sample --ckpt "$ckpt6" --noise overflow.npy --out s
expect_error "npy shape overflow (invert)" "overflow.npy: the shape's element count overflows" \
    "$DDPM" invert --ckpt "$ckpt6" --images overflow.npy --out x.npy

# Flags are checked before the work.
mkdir -p readonly && chmod 555 readonly
if [ "$(id -u)" != 0 ]; then
    expect_error "unwritable sample --out" "--out: readonly: cannot write there" \
        "$DDPM" sample --ckpt "$ckpt6" --n 1 --out readonly
else
    expect_error "sample --out under a file" "--out: " "$DDPM" sample --ckpt "$ckpt6" --n 1 \
        --out fifo/sub
fi
expect_error "eval --batch xyz" "--batch: expected an integer" \
    "$DDPM" eval --ckpt "$ckpt6" --data "$FASHION" --batch xyz
expect_error "eval --seed abc" "--seed: expected an integer" \
    "$DDPM" eval --ckpt "$ckpt6" --data "$FASHION" --seed abc

# SIGTERM while a sample grid is drawn (1000 steps of 16 images): the run stops at once, at
# the step it had finished, with a checkpoint of it.
"$DDPM" train "${tiny[@]}" steps=1000 timesteps=1000 sample_every=2 sample_n=16 out_dir=term \
    2>term.log &
pid=$!
for _ in $(seq 300); do [ "$(tail -1 term/log.csv 2>/dev/null | cut -d, -f1)" = 2 ] && break; sleep 0.1; done
sleep 0.5
kill -TERM "$pid"
signalled=$SECONDS
wait "$pid" || fail "SIGTERM while sampling: exit status $?: $(tail -3 term.log)"
[ $((SECONDS - signalled)) -le 5 ] || fail "SIGTERM waited $((SECONDS - signalled)) s for the grid"
grep -q "stopping at step 2 on a signal" term.log || fail "did not stop at step 2: $(tail -3 term.log)"
[ -f term/ckpt_00000002.safetensors ] || fail "no checkpoint at step 2"
[ ! -e term/samples_00000002.png ] || fail "an unfinished grid was written"
ok

# Under mpirun, a MASTER_ADDR that does not resolve fails at once, naming the host.
# (LeakSanitizer would report Open MPI's own allocations at exit, as in e2e_dist.)
if command -v mpirun >/dev/null; then
    started=$SECONDS
    expect_error "unresolvable MASTER_ADDR" "rank 0's host 'no-such-host.invalid' does not resolve" \
        env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" timeout 120 mpirun -np 2 --oversubscribe \
        $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) -x MASTER_ADDR=no-such-host.invalid \
        -x MASTER_PORT=29741 "$DDPM" train "${tiny[@]}" steps=2 out_dir=unresolved
    [ $((SECONDS - started)) -le 60 ] || fail "an unresolvable host took $((SECONDS - started)) s"
else
    echo "SKIP unresolvable MASTER_ADDR: no mpirun"
fi

# Full disk: a tmpfs with room for one checkpoint and a half. The second save fails; the
# first stays whole, no partial file stays, and on_save_error decides stop or go on.
size=$(stat -c %s "$ckpt6")
full_disk() {
    unshare -rm bash -c 'mount -t tmpfs -o size=$1 tmpfs "$2" && shift 2 && "$@"' _ \
        $((size * 3 / 2 + 65536)) "$WORK/disk" "$@"
}
mkdir -p disk
if full_disk true 2>/dev/null; then
    full_disk bash -c '"$@" out_dir=disk/run 2>"'"$WORK"'/stop.log"; echo $? >"'"$WORK"'/stop.rc";
        ls disk/run >"'"$WORK"'/stop.ls"; "'"$DDPM"'" sample --ckpt disk/run/ckpt_00000003.safetensors \
        --n 1 --sampler ddim --steps ddim2 --out "'"$WORK"'/stop_s" >/dev/null 2>&1; echo $? >>"'"$WORK"'/stop.rc"' \
        _ "$DDPM" train "${tiny[@]}" steps=9 ckpt_every=3 keep_ckpts=2
    [ "$(head -1 stop.rc)" = 1 ] || fail "full disk, on_save_error=stop: exit $(head -1 stop.rc)"
    grep -q "No space left on device" stop.log || fail "full disk not reported: $(cat stop.log)"
    grep -q "stopping: the checkpoint could not be written" stop.log || fail "no stop message"
    grep -qx "ckpt_00000003.safetensors" stop.ls || fail "the previous checkpoint is gone"
    ! grep -q "tmp" stop.ls || fail "a partial file stayed: $(cat stop.ls)"
    [ "$(tail -1 stop.rc)" = 0 ] || fail "the previous checkpoint does not load"
    ok
    full_disk bash -c '"$@" out_dir=disk/run 2>"'"$WORK"'/go.log"; echo $? >"'"$WORK"'/go.rc"' \
        _ "$DDPM" train "${tiny[@]}" steps=9 ckpt_every=3 keep_ckpts=2 on_save_error=continue
    grep -q "training on without this checkpoint" go.log || fail "continue mode: $(cat go.log)"
    grep -q "step 9/9" go.log || fail "continue mode did not train to the end"
    ok
else
    echo "SKIP full disk: this machine does not let a user namespace mount a tmpfs"
fi
finish
