#!/usr/bin/env bash
# Full-disk saves: out_dir on a tmpfs (mounted in a user namespace) of 0.3 to 2.9 times a
# checkpoint's size; each run trains 9 steps with a checkpoint every 3, once with
# on_save_error=stop and once with continue. Counts the saves that failed, and checks after
# each run that every checkpoint left loads, the last one saved is still there, and no
# partial file stays. Usage: tools/full_disk_trials.sh [bin/ddpm]
set -u
cd "$(dirname "$0")/.."
DDPM=$(realpath "${1:-bin/ddpm}")
ROOT=$PWD
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
unshare -rm true 2>/dev/null || { echo "full_disk_trials.sh: no user namespace mounts here"; exit 2; }
tiny=(--config "$ROOT/configs/tiny" data_limit=64 batch_size=4 ch=8 groups=4 timesteps=50
      log_every=1 sample_n=0 threads=1 --device cpu steps=9 ckpt_every=3 keep_ckpts=2)
"$DDPM" train "${tiny[@]}" steps=3 out_dir=probe 2>/dev/null || exit 1
size=$(stat -c %s probe/ckpt_00000003.safetensors)
trials=0 failed_saves=0 lost=0 partial=0 crashes=0
for tenths in 3 5 8 11 13 15 17 19 22 26 29; do
    for policy in stop continue; do
        bytes=$((size * tenths / 10))
        rm -rf disk && mkdir disk
        unshare -rm bash -c 'mount -t tmpfs -o size=$1 tmpfs disk && shift && "$@" out_dir=disk/run 2>log; echo $? >rc; ls disk/run >ls;
            for c in disk/run/ckpt_*.safetensors; do [ -e "$c" ] || continue; "$0" sample --ckpt "$c" --n 1 --sampler ddim --steps ddim2 --out s >/dev/null 2>&1 || echo "$c" >>bad; done' \
            "$DDPM" "$bytes" "$DDPM" train "${tiny[@]}" on_save_error=$policy
        trials=$((trials + 1))
        failed_saves=$((failed_saves + $(grep -c "checkpoint not written" log)))
        [ "$(cat rc)" -lt 128 ] || crashes=$((crashes + 1))
        grep -q tmp ls && partial=$((partial + 1))
        [ -s bad ] && lost=$((lost + 1)) && rm bad
        # the last save that worked must still be there
        last=$(sed -n 's/^saved disk\/run\/\(ckpt_[0-9]*.safetensors\)$/\1/p' log | tail -1)
        [ -z "$last" ] || grep -qx "$last" ls || lost=$((lost + 1))
    done
done
echo "full disk ($size-byte checkpoints): $trials runs, $failed_saves failed saves; previous checkpoints lost $lost, partial files left $partial, crashes $crashes"
[ $((lost + partial + crashes)) -eq 0 ]
