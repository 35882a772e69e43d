#!/usr/bin/env bash
# kill -9 soak: trains a tiny config with frequent checkpoints, kills it with SIGKILL at
# random moments and at chosen ones (while a checkpoint's temporary file exists, just after
# a checkpoint appears, while a sample grid is drawn), resumes, and checks after every kill:
#   - every checkpoint present loads (`ddpm sample` on it);
#   - no temporary file is ever resumed from, and none is left once a run resumes;
#   - --resume continues (exit 0, "resumed from ckpt_<step>");
#   - log.csv has each step once, in order;
#   - the finished run's last checkpoint has the bytes of an uninterrupted run's.
# --dist kills a random rank of a 2-rank mpirun run at a random moment instead: no rank may
# outlive the deadline, and the last checkpoint must load.
# Prints the counts; exits 1 if any failure column is non-zero.
# Usage: tools/soak_kill.sh [--trials N] [--kills K] [--dist] [--ddpm PATH] [--seed S]
set -u
cd "$(dirname "$0")/.."
trials=50 kills=3 dist=0 seed=$RANDOM
DDPM=$(realpath bin/ddpm)
while [ $# -gt 0 ]; do
    case $1 in
    --trials) trials=$2; shift 2 ;;
    --kills) kills=$2; shift 2 ;;
    --dist) dist=1; shift ;;
    --ddpm) DDPM=$(realpath "$2"); shift 2 ;;
    --seed) seed=$2; shift 2 ;;
    *) echo "soak_kill.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
[ -x "$DDPM" ] || { echo "soak_kill.sh: $DDPM is not built (make bin/ddpm)" >&2; exit 2; }
RANDOM=$seed
WORK=$(mktemp -d)
trap 'kill -9 $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
STEPS=24
args=(--config "$PWD/configs/tiny" data_limit=64 batch_size=4 ch=8 groups=4 timesteps=50
      log_every=1 ckpt_every=2 keep_ckpts=3 sample_every=8 sample_n=2 threads=1 out_dir=run
      --device cpu)
declare -A hit=([random]=0 [tmp]=0 [rename]=0 [sampling]=0 [missed]=0)
rank_kills=(0 0) slowest_stop=0
kill_count=0 corrupt=0 failed_resumes=0 not_identical=0 tmp_taken=0 log_broken=0 hangs=0
problems=()

problem() {
    problems+=("trial $trial: $*")
    echo "  $*" >&2
}

# The moment of a kill: poll_<what> returns 0 once it is time.
poll_tmp() { compgen -G "$1/run/ckpt_*.tmp" >/dev/null; }
poll_new_ckpt() { [ "$(ls "$1"/run/ckpt_*.safetensors 2>/dev/null | tail -1)" != "$2" ]; }
poll_sampling() { [ "$(tail -1 "$1/run/log.csv" 2>/dev/null | cut -d, -f1)" = 8 ]; }

# kill_run DIR PID MODE: waits for the moment MODE picks, then SIGKILLs PID.
kill_run() {
    local dir=$1 pid=$2 mode=$3 last
    last=$(ls "$dir"/run/ckpt_*.safetensors 2>/dev/null | tail -1)
    local delay
    delay=$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r / 32767 * 3 }')
    local moment=missed
    for _ in $(seq 3000); do
        kill -0 "$pid" 2>/dev/null || return 1   # finished before the moment came
        case $mode in
        random) sleep "$delay"; moment=random; break ;;
        tmp) poll_tmp "$dir" && moment=tmp && break ;;
        rename) poll_new_ckpt "$dir" "$last" && moment=rename && break ;;
        sampling) poll_sampling "$dir" && moment=sampling && break ;;
        esac
        sleep 0.005
    done
    kill -9 "$pid" 2>/dev/null || return 1
    hit[$moment]=$((hit[$moment] + 1))
    wait "$pid" 2>/dev/null
    kill_count=$((kill_count + 1))
}

check_checkpoints() {
    local dir=$1 ckpt
    for ckpt in "$dir"/run/ckpt_*.safetensors; do
        [ -e "$ckpt" ] || continue
        "$DDPM" sample --ckpt "$ckpt" --n 1 --sampler ddim --steps ddim2 --out "$WORK/verify" \
            --device cpu >/dev/null 2>"$WORK/verify.log" ||
            { corrupt=$((corrupt + 1)); problem "$ckpt does not load: $(tail -1 "$WORK/verify.log")"; }
    done
}

check_log() {
    local log=$1/run/log.csv
    [ -f "$log" ] || return 0
    if ! tail -n +2 "$log" | cut -d, -f1 | sort -n -c 2>/dev/null ||
        [ -n "$(tail -n +2 "$log" | cut -d, -f1 | uniq -d)" ]; then
        log_broken=$((log_broken + 1))
        problem "log.csv has repeated or out-of-order steps"
    fi
}

# resume DIR: runs to the end with --resume; 0 if it finished.
resume() {
    local dir=$1
    (cd "$dir" && "$DDPM" train "${args[@]}" steps=$STEPS --resume >/dev/null 2>"$dir/resume.log")
    local rc=$?
    if grep -q "resumed from .*\.tmp" "$dir/resume.log"; then
        tmp_taken=$((tmp_taken + 1))
        problem "resumed from a temporary file"
    fi
    return $rc
}

single_trial() {
    local dir=$WORK/t$trial modes=(random tmp rename sampling)
    mkdir -p "$dir"
    for k in $(seq "$kills"); do
        local mode=${modes[$(((trial + k) % 4))]}
        (cd "$dir" && exec "$DDPM" train "${args[@]}" steps=$STEPS $([ -d "$dir/run" ] && echo --resume) \
            >/dev/null 2>>"$dir/train.log") &
        kill_run "$dir" $! "$mode" || break
        check_checkpoints "$dir"
    done
    resume "$dir" || { failed_resumes=$((failed_resumes + 1)); problem "resume failed: $(tail -2 "$dir/resume.log")"; }
    compgen -G "$dir/run/ckpt_*.tmp" >/dev/null && { tmp_taken=$((tmp_taken + 1)); problem "a temporary file was left"; }
    check_checkpoints "$dir"
    check_log "$dir"
    cmp -s "$WORK/ref/run/ckpt_$(printf %08d $STEPS).safetensors" \
        "$dir/run/ckpt_$(printf %08d $STEPS).safetensors" ||
        { not_identical=$((not_identical + 1)); problem "the final checkpoint differs from the uninterrupted run's"; }
    rm -rf "$dir"
}

# A 2-rank run, one rank killed at a random moment: every rank must be gone within 60 s.
dist_trial() {
    local dir=$WORK/t$trial
    mkdir -p "$dir"
    (cd "$dir" && exec timeout -s KILL 300 mpirun -np 2 --oversubscribe \
        $([ "$(id -u)" = 0 ] && echo --allow-run-as-root) "$DDPM" train "${args[@]}" \
        steps=100000 sample_every=0 dist_timeout=20 >/dev/null 2>"$dir/train.log") &
    local launcher=$!
    for _ in $(seq 600); do compgen -G "$dir/run/ckpt_*.safetensors" >/dev/null && break; sleep 0.1; done
    sleep "$(awk -v r=$RANDOM 'BEGIN { printf "%.2f", r / 32767 * 2 }')"
    local rank=$((RANDOM % 2)) pid
    for pid in $(pgrep -f "out_dir=run"); do
        [ "$(readlink "/proc/$pid/cwd")" = "$dir" ] || continue
        tr '\0' '\n' 2>/dev/null <"/proc/$pid/environ" | grep -qx "OMPI_COMM_WORLD_RANK=$rank" &&
            kill -9 "$pid" && kill_count=$((kill_count + 1)) &&
            rank_kills[$rank]=$((rank_kills[$rank] + 1))
    done
    local started=$SECONDS
    wait "$launcher"
    [ $((SECONDS - started)) -le "$slowest_stop" ] || slowest_stop=$((SECONDS - started))
    if [ $((SECONDS - started)) -gt 60 ]; then
        hangs=$((hangs + 1))
        problem "rank $rank killed: the others took $((SECONDS - started)) s to stop"
    fi
    local last
    last=$(ls "$dir"/run/ckpt_*.safetensors 2>/dev/null | tail -1)
    [ -n "$last" ] || { corrupt=$((corrupt + 1)); problem "no checkpoint"; }
    check_checkpoints "$dir"
    rm -rf "$dir"
}

if [ "$dist" = 0 ]; then
    mkdir -p "$WORK/ref"
    (cd "$WORK/ref" && "$DDPM" train "${args[@]}" steps=$STEPS >/dev/null 2>"$WORK/ref.log") ||
        { echo "soak_kill.sh: the uninterrupted run failed: $(tail -3 "$WORK/ref.log")" >&2; exit 1; }
fi
started=$SECONDS
for trial in $(seq "$trials"); do
    if [ "$dist" = 1 ]; then dist_trial; else single_trial; fi
done
[ "$dist" = 0 ] || echo "rank kills: rank 0 ${rank_kills[0]}, rank 1 ${rank_kills[1]};" \
    "the slowest stop of the others took $slowest_stop s (deadline 60 s)"
failures=$((corrupt + failed_resumes + not_identical + tmp_taken + log_broken + hangs))
echo "soak_kill (seed $seed, $((SECONDS - started)) s): $trials trials, $kill_count kills" \
    "(at random ${hit[random]}, during a checkpoint write ${hit[tmp]}, just after a rename" \
    "${hit[rename]}, during sampling ${hit[sampling]}, the moment missed ${hit[missed]});" \
    "corrupt checkpoints $corrupt, failed resumes $failed_resumes, non-identical final runs" \
    "$not_identical, temporary files taken or left $tmp_taken, broken logs $log_broken," \
    "hangs $hangs"
[ "$failures" -eq 0 ]
