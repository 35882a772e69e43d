#!/usr/bin/env bash
# The kill -9 soak (tools/soak_kill.sh), short: 10 trials of 2 kills each, at random moments,
# during a checkpoint write, just after one appears, and while a sample grid is drawn. Every
# checkpoint must load, resumes must continue, and every run must end with the bytes of an
# uninterrupted one. The long soak and its counts: docs/RELIABILITY.md. The sanitizer pass
# runs 2 trials: it looks for memory errors, which one kill finds as well as ten.
source tests/lib_e2e.sh
trials=10
[ -z "${DDPM_SANITIZE:-}" ] || trials=2
"$ROOT/tools/soak_kill.sh" --trials "$trials" --kills 2 --ddpm "$DDPM" --seed 16 || fail "the soak found failures"
ok
finish
