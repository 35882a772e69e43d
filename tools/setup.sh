#!/usr/bin/env bash
# Installs the Debian packages in tools/debian-packages.txt that are missing, when
# this shell may (root with apt-get); otherwise prints the one command that would and
# fails, so that `make run` and `make test` stop before compiling.
set -eu
cd "$(dirname "$0")/.."
if ! command -v dpkg-query >/dev/null; then
    echo "setup: no dpkg-query (not Debian): install the equivalents of tools/debian-packages.txt"
    exit 0
fi
mapfile -t wanted < <(grep -v '^#' tools/debian-packages.txt | sed '/^$/d')
missing=()
for pkg in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    echo "missing Debian packages; install them with:"
    echo "  sudo apt-get install -y ${missing[*]}"
    exit 1
fi
