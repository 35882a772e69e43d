#!/usr/bin/env bash
# Writes the sample sets that compare a DDPM with a rectified-flow model of the same network,
# data and steps (docs/QUALITY.md "Flow matching"): `ddpm sample` npz files
#   ddpm_ddim_<nfe>.npz   the DDPM (eps) with DDIM, eta 0, over ddim<nfe> timesteps;
#   fm_euler_<nfe>.npz    the flow model with Euler, <nfe> steps;
#   fm_heun_<nfe>.npz     the flow model with Heun, (nfe+1)/2 steps rounded down: its last
#                         step is Euler (diffusers), so 2 steps - 1 evaluations = nfe for odd
#                         nfe and nfe - 1 for even nfe;
# at nfe = 5 10 20 50 100 model evaluations, from the same seed and batch (hence the same x_T
# for every set), shift 1. Each set's log keeps the time per model evaluation.
#
# usage: tools/flow_compare.sh DDPM_CKPT FLOW_CKPT OUT_DIR [ddpm|euler|heun|flow|all]
#   (flow = euler and heun; the parts can run as separate processes)
#   N (default 500) images per set, BATCH (default 125), SEED (default 0), DDPM (binary,
#   default bin/ddpm).
set -euo pipefail
ddpm_ckpt=$1 flow_ckpt=$2 out=$3 which=${4:-all}
N=${N:-500} BATCH=${BATCH:-125} SEED=${SEED:-0} DDPM=${DDPM:-bin/ddpm}
NFES=${NFES:-5 10 20 50 100}
mkdir -p "$out/logs"

one() {   # name ckpt sampler steps
    local name=$1 ckpt=$2 sampler=$3 steps=$4 dir
    dir=$(mktemp -d "$out/.tmp.XXXXXX")
    "$DDPM" sample --ckpt "$ckpt" --sampler "$sampler" --steps "$steps" --n "$N" \
        --batch "$BATCH" --seed "$SEED" --out "$dir" 2>&1 | tr '\r' '\n' |
        grep -v '^step\|^$' >"$out/logs/$name.log"
    mv "$dir/samples.npz" "$out/$name.npz"
    mv "$dir/samples.png" "$out/$name.png"
    rmdir "$dir"
    echo "$name: $(grep 'sampled in' "$out/logs/$name.log")"
}

for nfe in $NFES; do
    case $which in ddpm | all) one "ddpm_ddim_$nfe" "$ddpm_ckpt" ddim "ddim$nfe" ;; esac
    case $which in euler | flow | all) one "fm_euler_$nfe" "$flow_ckpt" euler "$nfe" ;; esac
    case $which in heun | flow | all) one "fm_heun_$nfe" "$flow_ckpt" heun $(((nfe + 1) / 2)) ;; esac
done
