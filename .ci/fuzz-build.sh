#!/usr/bin/env bash
# The cargo-fuzz targets build (nightly); `cargo test` already replays their corpora on
# stable (shmlane-fuzz/tests/fuzz_corpus.rs).
source "$(dirname "$0")/lib.sh"

step "cargo +nightly fuzz build"
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  if ! command -v cargo-fuzz >/dev/null; then
    bounded 15m cargo install cargo-fuzz --locked
  fi
  (cd fuzz && bounded 15m cargo +nightly fuzz build)
else
  echo "no nightly toolchain: fuzz targets not built"
  if [ -n "${CI:-}" ]; then exit 1; fi
fi
