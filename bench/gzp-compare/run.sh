#!/usr/bin/env bash
# cwbackup's parallel gzip (src/volume/pgzip.rs) against gzp 2.0.4 and GNU gzip, on the tar
# streams of bench/run.sh's first two datasets, on tmpfs, alternating, best of R (default 3):
# compression time, CPU, peak RSS and size; decompression speed and peak RSS. 2 threads,
# level 6; gzp's Mgzip with our 4 MiB blocks and with its default 128 KiB, and its
# ParCompress<Gzip> (one stream through flate2). Usage: [R=n] bench/gzp-compare/run.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --locked --quiet --manifest-path "$here/Cargo.toml" --target-dir "$root/target/gzp-compare"
B="$root/target/gzp-compare/release/gzp-compare"
R=${R:-3}
work=$(mktemp -d /dev/shm/gzp-compare.XXXX)
trap 'rm -rf "$work"' EXIT
cd "$work"
python3 "$root/bench/gen.py" yaml 20000 20480 yaml && tar cf yaml.tar -C yaml . && rm -rf yaml
python3 "$root/bench/gen.py" half 4 134217728 half && tar cf half.tar -C half . && rm -rf half

declare -A best cpu rss
rec() { # KEY CMD...: keeps the shortest wall time (and its CPU time) and the largest RSS
    local k=$1 e u s m
    shift
    /usr/bin/time -f "%e %U %S %M" -o "$work/time" "$@" > /dev/null
    read -r e u s m < "$work/time"
    if [ -z "${best[$k]:-}" ] || python3 -c "import sys; sys.exit(0 if $e < ${best[$k]} else 1)"; then
        best[$k]=$e
        cpu[$k]=$(python3 -c "print(round($u + $s, 2))")
    fi
    [ "${rss[$k]:-0}" -lt "$m" ] && rss[$k]=$m
    return 0
}
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1), load $(cut -d' ' -f1-3 /proc/loadavg); best of $R; $(gzip --version | head -1)"
for ds in yaml half; do
    best=() cpu=() rss=()
    in=$ds.tar
    for _ in $(seq "$R"); do
        rec gzip-6 sh -c "gzip -6 -c $in > $ds.gnu.gz"
        rec pgzip "$B" c-ours "$in" "$ds.pgzip.gz"
        rec mgzip "$B" c-mgzip "$in" "$ds.mgzip.gz"
        rec mgzip-128k "$B" c-mgzip128k "$in" "$ds.mgzip-128k.gz"
        rec gzp-gzip "$B" c-gzip "$in" "$ds.gzp-gzip.gz"
        rec "gzip -d (gzip -6's)" sh -c "gzip -dc $ds.gnu.gz"
        rec "gzip -d (pgzip's)" sh -c "gzip -dc $ds.pgzip.gz"
        rec "pgzip reader (pgzip's)" "$B" d-ours "$ds.pgzip.gz"
        rec "gzp ParDecompress (mgzip's)" "$B" d-mgzip "$ds.mgzip.gz"
        rec "pgzip reader (mgzip's, via flate2)" "$B" d-ours "$ds.mgzip.gz"
        rec "flate2 (gzp-gzip's)" "$B" d-flate2 "$ds.gzp-gzip.gz"
    done
    want=$(sha256sum < "$in")
    for f in gnu pgzip mgzip mgzip-128k gzp-gzip; do
        [ "$(gzip -dc "$ds.$f.gz" | sha256sum)" = "$want" ] || { echo "$ds.$f.gz does not read back"; exit 1; }
    done
    insz=$(stat -c %s "$in")
    gnu=$(stat -c %s "$ds.gnu.gz")
    echo
    echo "$ds.tar, $((insz / 1048576)) MiB"
    echo
    echo "| compress | wall s | CPU s | peak RSS MiB | size | vs gzip -6 |"
    echo "|---|---|---|---|---|---|"
    for k in gzip-6 pgzip mgzip mgzip-128k gzp-gzip; do
        f=$k; [ "$k" = gzip-6 ] && f=gnu
        sz=$(stat -c %s "$ds.$f.gz")
        echo "| $k | ${best[$k]} | ${cpu[$k]} | $((rss[$k] / 1024)) | $sz | $(python3 -c "print(f'{($sz / $gnu - 1) * 100:+.3f} %')") |"
    done
    echo
    echo "| decompress | wall s | MiB/s | CPU s | peak RSS MiB |"
    echo "|---|---|---|---|---|"
    for k in "gzip -d (gzip -6's)" "gzip -d (pgzip's)" "pgzip reader (pgzip's)" "gzp ParDecompress (mgzip's)" "pgzip reader (mgzip's, via flate2)" "flate2 (gzp-gzip's)"; do
        echo "| $k | ${best[$k]} | $(python3 -c "print(f'{$insz / 1048576 / max(${best[$k]}, 0.001):.0f}')") | ${cpu[$k]} | $((rss[$k] / 1024)) |"
    done
done
