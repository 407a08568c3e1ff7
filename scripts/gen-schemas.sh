#!/usr/bin/env bash
# Regenerates schemas/*.schema.json from the Rust types (the one source of truth).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet --locked
for which in task result manifest; do
    ./target/debug/cwbackup schema "$which" > "schemas/$which.schema.json"
done
echo "schemas regenerated: git diff schemas/ shows what changed"
