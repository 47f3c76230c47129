#!/usr/bin/env bash
# The README's test command (every crate of the workspace), the crash soak, and the
# benchmarks' build.
source "$(dirname "$0")/lib.sh"

step "cargo test (the README's test command: every crate)"
# CI=true (set by the CI service; .ci/run sets it too): a skipped test is a failure.
CI="${CI:-true}" bounded 20m cargo test

step "crash soak: 50 rounds of SIGKILLed producers, consumers, senders, receivers"
# Prints torn / duplicated / hung / lost counts; exits non-zero on any but allowed loss.
bounded 15m cargo run --release -p shmlane --example soak -- --rounds 50

step "cargo bench --no-run"
bounded 15m cargo bench --workspace --no-run
