#!/usr/bin/env bash
# Tries the README's two commands as a new user would on a fresh machine: debootstrap makes
# a minimal Debian root with only gcc, make and git; the committed HEAD of this repository is
# cloned into it; `make test` and then `make run` run there under chroot, each with a time
# limit. Finds what tools/debian-packages.txt misses on a machine that has nothing else.
#
#   sudo tools/fresh_root_check.sh [ROOT_DIR]   (default /var/tmp/ddpm-fresh-root)
#   env: SUITE=bookworm MIRROR=http://deb.debian.org/debian LIMIT_TEST=3600 LIMIT_RUN=1800
#        KEEP_ROOT=1 reuses an existing root's base system instead of making it again
#
# Prints, for each step, its wall time and exit status; the logs stay in ROOT_DIR/logs.
# Exits non-zero when either command fails or runs out of time.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(realpath -m "${1:-/var/tmp/ddpm-fresh-root}")
suite=${SUITE:-bookworm}
mirror=${MIRROR:-http://deb.debian.org/debian}
project=/home/ddpm/ddpm.c

[ "$(id -u)" -eq 0 ] || { echo "fresh_root_check: needs root (debootstrap, chroot, mount)" >&2; exit 2; }
command -v debootstrap >/dev/null || {
    echo "fresh_root_check: no debootstrap; install it with: apt-get install -y debootstrap" >&2
    exit 2
}

unmount_all() {
    for point in dev/pts dev proc sys; do
        mountpoint -q "$root/$point" && umount "$root/$point"
    done
    return 0
}
trap unmount_all EXIT

timed() {   # timed NAME LIMIT command...: runs it, logs it, prints its time and status
    local name=$1 limit=$2 start=$SECONDS rc=0
    shift 2
    nice -n 10 timeout "$limit" "$@" >"$root/logs/$name.log" 2>&1 || rc=$?
    local verdict="exit $rc"
    [ "$rc" -eq 124 ] && verdict="stopped by the ${limit}s limit"
    printf '%-12s %5ds  %s  (log: %s)\n' "$name" $((SECONDS - start)) "$verdict" \
        "$root/logs/$name.log"
    return "$rc"
}

make_root() {
    if [ -n "${KEEP_ROOT:-}" ] && [ -x "$root/usr/bin/gcc" ]; then
        rm -rf "$root/home/ddpm" "$root/logs"
        mkdir -p "$root/logs"
        return 0
    fi
    unmount_all
    rm -rf "$root"
    mkdir -p "$root/logs"
    timed debootstrap 3600 debootstrap --variant=minbase --include=gcc,make,git \
        "$suite" "$root" "$mirror"
}

mount_all() {
    mount -t proc proc "$root/proc"
    mount -t sysfs sys "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
    cp /etc/resolv.conf "$root/etc/resolv.conf"
}

make_root
mkdir -p "$root/home/ddpm"
git clone --quiet "$PWD" "$root$project"
echo "cloned $(git -C "$root$project" log -1 --format='%h %s' | cut -c1-70)"
mount_all
in_root=(chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
         LANG=C.UTF-8 bash -c)
status=0
timed make_test "${LIMIT_TEST:-3600}" "${in_root[@]}" "cd $project && make test" || status=1
timed make_run "${LIMIT_RUN:-1800}" "${in_root[@]}" "cd $project && make run" || status=1
for name in make_test make_run; do
    echo "--- last lines of $name.log"
    tail -5 "$root/logs/$name.log"
done
exit "$status"
