#!/usr/bin/env bash
# The CPU engine's libraries (OpenBLAS, cJSON, libpng, libzip, stb) for a GPU machine that
# has the CUDA stack but not these, and where nothing can be installed.
#   bash tools/gpu_sysroot.sh download   # here: Debian's .deb files into .gpudeps/
#   source tools/gpu_sysroot.sh          # there: unpacks them into /tmp/ddpm-sysroot
#                                        # and exports CPATH, LIBRARY_PATH,
#                                        # LD_LIBRARY_PATH and OPENBLAS_DIR
# .gpudeps/ is git-ignored: name it in the device call's carry.
PACKAGES="libopenblas-openmp-dev libopenblas0-openmp libgfortran5 libquadmath0
          libcjson-dev libcjson1 libpng-dev libpng16-16 libzip-dev libzip4 zlib1g-dev
          libstb-dev libstb0"
DEPS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.gpudeps

if [ "${1:-}" = download ]; then
    mkdir -p "$DEPS_DIR" && cd "$DEPS_DIR" && rm -f ./*.deb &&
        apt-get download $PACKAGES && ls -la "$DEPS_DIR"
    exit $?
fi

sysroot_unpack() {
    local root=$1 arch=x86_64-linux-gnu deb link target
    [ -d "$root/usr" ] && return 0
    for deb in "$DEPS_DIR"/*.deb; do dpkg -x "$deb" "$root" || return 1; done
    # A -dev package's lib<x>.so points at a file of its runtime package; where that
    # runtime is the system's own (zlib), point it at the system's soname instead.
    for link in "$root/usr/lib/$arch"/*.so; do
        [ -e "$link" ] && continue
        target=$(ldconfig -p | awk -v n="$(basename "$link")." 'index($1, n) == 1 {print $NF; exit}')
        [ -n "$target" ] && ln -sf "$target" "$link"
    done
}

if ! ls "$DEPS_DIR"/*.deb >/dev/null 2>&1; then
    echo "gpu_sysroot: no .deb files in $DEPS_DIR (run: bash tools/gpu_sysroot.sh download)" >&2
    return 1 2>/dev/null || exit 1
fi
DDPM_SYSROOT=/tmp/ddpm-sysroot
sysroot_unpack "$DDPM_SYSROOT" || { echo "gpu_sysroot: unpacking failed" >&2; return 1; }
gnu=x86_64-linux-gnu
export OPENBLAS_DIR=$DDPM_SYSROOT/usr/lib/$gnu/openblas-openmp
export CPATH=$DDPM_SYSROOT/usr/include/$gnu/openblas-openmp:$DDPM_SYSROOT/usr/include:$DDPM_SYSROOT/usr/include/$gnu${CPATH:+:$CPATH}
export LIBRARY_PATH=$OPENBLAS_DIR:$DDPM_SYSROOT/usr/lib/$gnu${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$LIBRARY_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# The Makefile appends to LDLIBS: binaries then find these libraries without LD_LIBRARY_PATH.
export LDLIBS="-Wl,-rpath,$OPENBLAS_DIR -Wl,-rpath,$DDPM_SYSROOT/usr/lib/$gnu${LDLIBS:+ $LDLIBS}"
echo "gpu_sysroot: CPU engine libraries from $DDPM_SYSROOT"
