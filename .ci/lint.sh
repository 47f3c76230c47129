#!/usr/bin/env bash
# Formatting, clippy (warnings are errors) and rustdoc (warnings are errors), every crate.
source "$(dirname "$0")/lib.sh"

step "cargo fmt --check"
bounded 2m cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
bounded 15m cargo clippy --workspace --all-targets -- -D warnings

step "cargo doc (warnings are errors)"
RUSTDOCFLAGS="-D warnings" bounded 10m cargo doc --workspace --no-deps
