#!/usr/bin/env bash
# `make run` and `make test` run the set-up (tools/setup.sh) before the first compile, even
# with -j2. A machine that already has every package would hide a wrong order, so this test
# does not look at packages: it reads the order make chooses (make -n, into empty build
# folders) and logs the order of real runs with shims for the set-up and the compiler.
source tests/lib_e2e.sh

# A make that ignores the suite's own make (its jobserver, its variables).
clean_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$ROOT" --no-print-directory "$@"; }

# The dry run: the line that runs tools/setup.sh comes before the first compile line.
for target in run test; do
    plan="$WORK/plan-$target.txt"
    clean_make -n -j2 "$target" CUDA=0 BUILD="$WORK/build-n" BIN="$WORK/bin-n" >"$plan" 2>&1 ||
        fail "make -n $target: $(tail -5 "$plan")"
    setup_line=$(grep -n -m1 'tools/setup.sh' "$plan" | cut -d: -f1)
    compile_line=$(grep -n -m1 -- ' -c .*\.c -o ' "$plan" | cut -d: -f1)
    [ -n "$setup_line" ] || fail "make -n $target never runs tools/setup.sh"
    [ -n "$compile_line" ] || fail "make -n $target compiles nothing into an empty build folder"
    [ "$setup_line" -lt "$compile_line" ] ||
        fail "make $target compiles (line $compile_line) before the set-up (line $setup_line)"
    ok
done

# The real runs: shims log "setup" and "compile"; the compiler shim then fails, which stops
# make. The log must start with the set-up, and the set-up must have finished first.
shims="$WORK/shims"
mkdir -p "$shims"
order="$WORK/order.log"
cat >"$shims/setup" <<EOF
#!/bin/sh
echo setup-start >>"$order"
sleep 1
echo setup-done >>"$order"
EOF
cat >"$shims/cc" <<EOF
#!/bin/sh
case " \$* " in *" -c "*) echo compile >>"$order"; exit 1 ;; esac
exec gcc "\$@"
EOF
chmod +x "$shims/setup" "$shims/cc"
for target in run test; do
    rm -f "$order"
    clean_make -j2 "$target" CUDA=0 MPI=0 CC="$shims/cc" SETUP="$shims/setup" \
        BUILD="$WORK/build-$target" BIN="$WORK/bin-$target" >"$WORK/make-$target.txt" 2>&1 &&
        fail "make $target succeeded with a compiler that fails"
    [ -s "$order" ] || fail "make $target ran neither the set-up nor a compile"
    [ "$(sed -n 1,2p "$order" | tr '\n' ' ')" = "setup-start setup-done " ] ||
        fail "make $target: order was $(tr '\n' ' ' <"$order")"
    grep -qx compile "$order" || fail "make $target never reached a compile after the set-up"
    ok
done

# A set-up that fails (packages missing, no right to install) stops make before any compile.
rm -f "$order"
clean_make -j2 run CUDA=0 MPI=0 CC="$shims/cc" SETUP=false BUILD="$WORK/build-f" \
    BIN="$WORK/bin-f" >"$WORK/make-f.txt" 2>&1 && fail "make run went on after a failed set-up"
[ ! -e "$order" ] || fail "make run compiled after a failed set-up: $(cat "$order")"
ok

finish
