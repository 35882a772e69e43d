#!/usr/bin/env bash
# A rehearsal of tools/gpu_check.sh's side-by-side stage on a fake device, since the real
# one is lent rarely and for minutes. Stand-ins: nvidia-smi, our binaries (shell scripts
# that log when their timed part starts and ends and print a JSON line) and the peer
# (a bench_torch.py with the real one's timed()/main() shape, run through the real
# tools/run_yardstick.py and its gate). It checks what a dry run cannot:
# - every peer has compiled before our first timed run, and no two timed parts overlap;
# - each row's peer is timed after our run of that row;
# - bf16 reported "not supported" when bench_train refuses mixed_precision=bf16;
# - the raw lines are labelled, at most 8 files come back in $OUT (the console log, the
#   status, the stage logs, the caches), and the table ends the output.
source tests/lib_e2e.sh
"$PY" -c 'import torch' 2>/dev/null || skip "$PY has no torch (tools/run_yardstick.py needs it)"
FAKE=$WORK/fake
mkdir -p "$FAKE/path" "$FAKE/bin" "$FAKE/yard" "$WORK/out"
export FAKE_TIMELINE=$WORK/timeline
: >"$FAKE_TIMELINE"
ln -s "$(command -v "$PY")" "$FAKE/path/python3"

cat >"$FAKE/path/nvidia-smi" <<'EOF'
#!/usr/bin/env bash
case "$*" in
*noheader*) echo "Fake GPU 80GB" ;;
*) printf 'name\nFake GPU 80GB\n' ;;
esac
EOF
cat >"$FAKE/bin/ddpm" <<'EOF'
#!/usr/bin/env bash
[ "${1:-}" = backends ] && printf 'cpu\ncuda\n'
EOF
# bench_train/bench_sample: 0.3 s of "timed" work, logged; bf16 refused as today's build does
cat >"$FAKE/bin/bench_train" <<'EOF'
#!/usr/bin/env bash
batch=?
for a; do
    case $a in
    mixed_precision=bf16) echo "ddpm: override: unknown key 'mixed_precision'" >&2; exit 1 ;;
    batch_size=*) batch=${a#batch_size=} ;;
    esac
done
echo "$(date +%s.%N) start ours_$(basename "$0")_b$batch" >>"$FAKE_TIMELINE"
sleep 0.3
echo "$(date +%s.%N) end ours_$(basename "$0")_b$batch" >>"$FAKE_TIMELINE"
echo "{\"engine\": \"ddpm.c\", \"batch\": $batch, \"p50_ms\": $((batch == 128 ? 40 : 20)), \"peak_mem_gib\": 6.0}"
EOF
cp "$FAKE/bin/bench_train" "$FAKE/bin/bench_sample"
echo "commit=fake123" >"$FAKE/bin/BUILD_INFO"
chmod +x "$FAKE"/path/* "$FAKE"/bin/*

cat >"$FAKE/yard/ddpm_unet_torch.py" <<'EOF'
import torch
def timestep_embedding(t, dim):
    return torch.arange(dim, device=t.device)
EOF
cat >"$FAKE/yard/bench_torch.py" <<'EOF'
"""Stands in for the yardstick's bench_torch.py: the same timed() and main() shape."""
import argparse, json, os, time

class Dev:
    type = "cpu"

def log(what):
    with open(os.environ["FAKE_TIMELINE"], "a") as f:
        f.write(f"{time.time():.6f} {what}\n")

def timed(fn, dev, warmup, iters):
    for _ in range(warmup):
        fn()
    log(f"start {NAME}")
    for _ in range(iters):
        fn()
    log(f"end {NAME}")
    return 50.0

def main():
    global NAME
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--config")
    p.add_argument("--batch", type=int)
    p.add_argument("--precision")
    p.add_argument("--compile")
    a = p.parse_args()
    NAME = f"peer_{a.mode}_b{a.batch}_{a.precision}_{a.compile}"
    calls = [0]
    def one():
        calls[0] += 1
        if calls[0] == 1:   # the compile
            log(f"compile-start {NAME}")
            time.sleep(1.0)
            log(f"compile-end {NAME}")
        time.sleep(0.01)
    ms = timed(one, Dev(), 10, 20)
    r = {"peer": "pytorch", "mode": a.mode, "batch": a.batch, "precision": a.precision,
         "compile": a.compile, "ms_per_step": ms}
    if a.compile == "none":
        r["peak_mem_gib"] = 9.0
    print(json.dumps(r), flush=True)
EOF

PATH=$FAKE/path:$PATH OUT=$WORK/out BIN=$FAKE/bin STAGES=bench YARDSTICK_DIR=$FAKE/yard \
    GPU_CACHE_DIR=$WORK/cache PERF_LOG_DIR=$WORK/perf-logs B_PEER_WAIT=90 \
    bash tools/gpu_check.sh >"$WORK/check.log" 2>&1 || fail "exit status $?: $(tail -20 "$WORK/check.log")"
ok

"$PY" - "$FAKE_TIMELINE" <<'EOF' || fail "timeline: $(cat "$FAKE_TIMELINE")"
import sys
events = [line.split() for line in open(sys.argv[1])]
begun, timed, compiles = {}, [], []
for stamp, kind, name in events:
    if kind in ("start", "compile-start"):
        begun[(kind, name)] = float(stamp)
    else:
        opening = "start" if kind == "end" else "compile-start"
        interval = (begun.pop((opening, name)), float(stamp), name)
        (timed if kind == "end" else compiles).append(interval)
assert len(compiles) == 6, f"{len(compiles)} peer compiles, expected 6"
assert len(timed) == 11, f"{len(timed)} timed parts, expected 11 (4 ours, 6 peers, the repeat)"
first_ours = min(s for s, _, n in timed if n.startswith("ours"))
late = [n for _, e, n in compiles if e > first_ours]
assert not late, f"compiled while ours was timed: {late}"
timed.sort()
for (s1, e1, n1), (s2, e2, n2) in zip(timed, timed[1:]):
    assert e1 <= s2, f"{n1} and {n2} overlap"
order = [n for _, _, n in timed]
for ours, peer in [("ours_bench_train_b128", "peer_train_b128_tf32_default"),
                   ("ours_bench_train_b8", "peer_train_b8_tf32_default"),
                   ("ours_bench_sample_b256", "peer_sample_b256_tf32_reduce-overhead"),
                   ("ours_bench_sample_b1", "peer_sample_b1_tf32_reduce-overhead")]:
    assert order.index(ours) < order.index(peer), f"{peer} timed before {ours}: {order}"
print("timeline ok:", order)
EOF
ok

grep -qF "| train | 128 | tf32 | 40.00 | 50.00 | 1.25x | >= 1.1x torch.compile tf32 | yes |" \
    "$WORK/check.log" || fail "batch-128 TF32 row: $(tail -12 "$WORK/check.log")"
grep -qF "| train | 128 | bf16 | not supported by this build | 50.00 | - |" "$WORK/check.log" ||
    fail "bf16 row: $(grep '| train | 128 | bf16' "$WORK/check.log")"
grep -qF "| peak memory | 128 | tf32 | 6.00 GiB | 9.00 GiB | 0.67 |" "$WORK/check.log" ||
    fail "memory row"
tail -n 1 "$WORK/check.log" | grep -qF "| ours_train_b128_tf32, repeated last | 128 | - | 40.00 | first: 40.00 | +0.0% |" ||
    fail "the output does not end with the drift row: $(tail -n 1 "$WORK/check.log")"
ok

files=$(find "$WORK/out" -type f | wc -l)
[ "$files" -le 8 ] || fail "$files files in \$OUT, the device tool returns 8"
raw=$(ls "$WORK"/out/*-Fake-GPU-80GB-fake123.jsonl) || fail "no raw lines in \$OUT: $(ls "$WORK/out")"
[ "$(grep -c '"build_commit": "fake123"' "$raw")" -eq 11 ] ||
    fail "expected 11 labelled lines (5 ours, 6 peers): $(cat "$raw")"
cmp -s "$raw" "$WORK/perf-logs/$(basename "$raw")" || fail "raw lines not written to the perf-logs folder"
ok
sleep 1   # tee of the console log may lag the script's exit
tail -n 1 "$WORK/out/gpu-check.log" | grep -qF "| ours_train_b128_tf32, repeated last |" ||
    fail "the console log in \$OUT does not end with the table: $(ls "$WORK/out")"
for f in status.tsv logs.tar.gz conv-cache.tar.gz; do
    [ -s "$WORK/out/$f" ] || fail "no $f in \$OUT"
done
ok
finish
