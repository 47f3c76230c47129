#!/usr/bin/env bash
# The loom models of the library's protocols (RUSTFLAGS=--cfg loom, preemption bound 3).
source "$(dirname "$0")/lib.sh"

step "loom models (RUSTFLAGS=--cfg loom, preemption bound 3)"
loom_log=$(mktemp)
CARGO_TARGET_DIR=target/loom RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
  bounded 15m cargo test --release -p shmlane --test loom 2>&1 | tee "$loom_log"
# A loom build that compiles the models away (a cfg typo, a filter) passes with 0 tests.
loom_ran=$(sed -n 's/^test result: ok\. \([0-9][0-9]*\) passed.*/\1/p' "$loom_log" | awk '{s += $1} END {print s + 0}')
rm -f "$loom_log"
if [ "$loom_ran" -eq 0 ]; then
  echo "the loom step ran no models"; exit 1
fi
echo "loom: $loom_ran models passed"
