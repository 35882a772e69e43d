# Helpers for the end-to-end tests: each test runs bin/ddpm ($DDPM) in a temp dir.
set -u
DDPM=$(realpath "${DDPM:-bin/ddpm}")
ROOT=$(pwd)
FASHION=/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
# Debian's python3 with python3-numpy; DDPM_TEST_PYTHON names another (a GPU machine's).
PY=${DDPM_TEST_PYTHON:-/usr/bin/python3}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
checks=0

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

ok() { checks=$((checks + 1)); }

# expect_error "description" "phrase" command...: the command must exit non-zero
# without crashing (no signal, no sanitizer report) and print the phrase.
expect_error() {
    local what=$1 phrase=$2
    shift 2
    local out rc
    out=$("$@" 2>&1)
    rc=$?
    [ "$rc" -ne 0 ] || fail "$what: exit status 0, expected an error"
    [ "$rc" -lt 128 ] || fail "$what: crashed with status $rc: $out"
    if grep -qE "Sanitizer|runtime error" <<<"$out"; then fail "$what: sanitizer report: $out"; fi
    grep -qF -- "$phrase" <<<"$out" || fail "$what: message lacks '$phrase': $out"
    ok
}

finish() { echo "$(basename "$0" .sh): $checks passed, 0 failed"; }

# skip "reason": this test cannot run here; run_tests.sh reports it as SKIP, not PASS.
skip() {
    echo "$(basename "$0" .sh): skipped: $*"
    exit 77
}
