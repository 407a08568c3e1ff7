#!/usr/bin/env bash
# Peak RSS and wall time of backup, verify (deep) and restore over a volume of many empty
# files, on tmpfs (issue 11: memory must not grow past 256 MiB at 1M entries).
# Usage: bench/many-entries.sh [BIN] [FILES]   (defaults: target/release/cwbackup, 1000000)
# Needs /usr/bin/time (apt-get install time). Files go 1000 to a directory.
set -euo pipefail
BIN=$(realpath "${1:-target/release/cwbackup}")
N=${2:-1000000}
W=$(mktemp -d /dev/shm/many-entries.XXXXXX)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W/vol"
python3 - "$W/vol" "$N" <<'PY'
import os, sys
root, n = sys.argv[1], int(sys.argv[2])
for d in range((n + 999) // 1000):
    p = os.path.join(root, f"d{d:04}")
    os.mkdir(p)
    for i in range(min(1000, n - d * 1000)):
        open(os.path.join(p, f"f{i:04}"), "w").close()
PY
run() {
    local name=$1 task=$2
    if ! /usr/bin/time -v "$BIN" <<<"$task" >"$W/$name.json" 2>"$W/$name.time"; then
        cat "$W/$name.json"; tail -30 "$W/$name.time"; exit 1
    fi
    local kib wall
    kib=$(awk '/Maximum resident/ {print $6}' "$W/$name.time")
    wall=$(awk '/Elapsed \(wall/ {print $8}' "$W/$name.time")
    printf '%-8s %8d files  peak RSS %5d MiB  wall %s\n' "$name" "$N" $((kib / 1024)) "$wall"
}
vol="{\"path\": \"$W/vol\"}"
run backup "{\"operation\": \"backup\", \"repository\": \"$W/repo\", \"volume\": $vol}"
run verify "{\"operation\": \"verify\", \"repository\": \"$W/repo\", \"deep\": true}"
# Same counts, other mode: the restore hashes the whole live volume, extracts, diffs, swaps.
chmod 600 "$W/vol/d0000/f0000"
run restore "{\"operation\": \"restore\", \"repository\": \"$W/repo\", \"volume\": $vol}"
