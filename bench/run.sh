#!/usr/bin/env bash
# Benchmarks cwbackup side by side with GNU tar and coreutils in the same run, on tmpfs:
#   backup   vs  tar czf        (time, output size)
#   restore  vs  tar xzf        (time)
#   verify   vs  sha256sum      (throughput over the set's files)
#   no-op re-run  vs  hashing the volume (sha256sum of every file)
# and cwbackup's peak RSS (/usr/bin/time), also on a 2 GiB volume. Each time is the best of
# RUNS runs (default 3; 1 with quick), for every tool alike: this machine's timings vary.
# Usage: [RUNS=n] [BIN=path] [OUT=file] bench/run.sh [quick]   — writes bench/results.md
# BIN measures a binary built elsewhere (say, the release before a change) instead of building
# this tree; OUT writes the table to another file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
if [ -n "${BIN:-}" ]; then
    bin=$(realpath "$BIN")
else
    cargo build --release --locked --quiet
    bin="$root/target/release/cwbackup"
fi
work=$(mktemp -d /dev/shm/cwbackup-bench.XXXX)
trap 'rm -rf "$work"' EXIT
out=${OUT:-"$root/bench/results.md"}
quick=${1:-}
runs=${RUNS:-3}
[ "$quick" = quick ] && runs=${RUNS:-1}

# name count size kind (see gen.py)
datasets=("small-files 20000 20480 yaml" "large-files 4 134217728 half")
[ "$quick" = quick ] && datasets=("small-files 2000 20480 yaml" "large-files 2 33554432 half")
[ "$quick" = quick ] || datasets+=("2GiB 16 134217728 half")

measure() { # prints "seconds maxrss_kib" of a command
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2> "$work/stderr" || { cat "$work/stderr"; exit 1; }
    cat "$work/time"
}
# best SETUP CMD...: runs SETUP, then CMD, $runs times; prints the shortest time and the
# largest peak RSS. Every tool compared gets the same treatment.
best() {
    local setup=$1 t r best_t="" best_r=0
    shift
    for _ in $(seq "$runs"); do
        eval "$setup"
        read -r t r < <(measure "$@")
        if [ -z "$best_t" ] || python3 -c "import sys; sys.exit(0 if $t < $best_t else 1)"; then best_t=$t; fi
        [ "$r" -gt "$best_r" ] && best_r=$r
    done
    echo "$best_t $best_r"
}
# Changes one byte of one file in place: the live listing stays the same, so a restore must read
# every file to see that the volume differs (its slowest case).
flip_one_byte() {
    python3 -c 'import sys; f = open(sys.argv[1], "r+b"); b = f.read(1); f.seek(0); f.write(bytes([b[0] ^ 1]))' \
        "$(find "$1" -type f | head -1)"
}
ratio() { python3 -c "print(f'{$1 / max($2, 0.001):.2f}')"; }
mib() { python3 -c "print(f'{$1 / 1048576:.0f}')"; }

{
echo "# cwbackup benchmark"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); data on tmpfs; best of $runs runs; cwbackup $($bin --version | cut -d' ' -f2), $(tar --version | head -1)."
echo
echo "| dataset | volume MiB | backup s (tar czf s) | speed-up | archive MiB (tar MiB) | size vs tar | restore s (tar xzf s) | speed-up | verify MiB/s (sha256sum MiB/s) | ratio | no-op s (hash s) | ratio | peak RSS MiB | zstd backup s, MiB (speed-up) | zstd restore s (speed-up) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$out"

for spec in "${datasets[@]}"; do
    read -r name count size kind <<< "$spec"
    vol="$work/$name/vol"; repo="$work/$name/repo"
    mkdir -p "$vol"
    python3 "$root/bench/gen.py" "$vol" "$count" "$size" "$kind"
    bytes=$(du -sb "$vol" | cut -f1)
    task="{\"operation\":\"backup\",\"repository\":\"$repo\",\"volume\":{\"path\":\"$vol\"}}"
    echo "$task" > "$work/backup.json"

    read -r t_tar _ < <(best "rm -f $work/$name/tar.tgz" tar czf "$work/$name/tar.tgz" -C "$vol" .)
    read -r t_ours rss_backup < <(best "rm -rf $repo" "$bin" "$work/backup.json")
    set_dir=$(ls -d "$repo"/*/ | head -1)
    a_ours=$(stat -c %s "$set_dir/volume.tar.gz"); a_tar=$(stat -c %s "$work/$name/tar.tgz")

    # Restore onto a volume with one byte changed (flip_one_byte) vs tar xzf into an empty dir.
    echo "{\"operation\":\"restore\",\"repository\":\"$repo\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false}" > "$work/restore.json"
    read -r t_xtar _ < <(best "rm -rf $work/$name/x; mkdir $work/$name/x" tar xzf "$work/$name/tar.tgz" -C "$work/$name/x")
    rm -rf "$work/$name/x"
    read -r t_restore rss_restore < <(best "flip_one_byte $vol" "$bin" "$work/restore.json")

    echo "{\"operation\":\"verify\",\"repository\":\"$repo\"}" > "$work/verify.json"
    read -r t_sha _ < <(best : sha256sum "$set_dir"/volume.tar.gz)
    read -r t_verify rss_verify < <(best : "$bin" "$work/verify.json")
    set_bytes=$(stat -c %s "$set_dir/volume.tar.gz")

    read -r t_hash _ < <(best : sh -c "find '$vol' -type f -print0 | xargs -0 sha256sum")
    read -r t_noop rss_noop < <(best : "$bin" "$work/backup.json")

    # The same with compression zstd, into a second repository.
    zrepo="$work/$name/zrepo"
    echo "{\"operation\":\"backup\",\"repository\":\"$zrepo\",\"volume\":{\"path\":\"$vol\"},\"compression\":\"zstd\"}" > "$work/zbackup.json"
    read -r t_zb rss_zb < <(best "rm -rf $zrepo" "$bin" "$work/zbackup.json")
    z_bytes=$(stat -c %s "$(ls -d "$zrepo"/*/ | head -1)/volume.tar.zst")
    echo "{\"operation\":\"restore\",\"repository\":\"$zrepo\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false}" > "$work/zrestore.json"
    read -r t_zr rss_zr < <(best "flip_one_byte $vol" "$bin" "$work/zrestore.json")

    rss=$(printf "%s\n" "$rss_backup" "$rss_restore" "$rss_verify" "$rss_noop" "$rss_zb" "$rss_zr" | sort -n | tail -1)
    printf "| %s | %s | %s (%s) | %s× | %s (%s) | %s %% | %s (%s) | %s× | %s (%s) | %s | %s (%s) | %s | %s | %s, %s (%s×) | %s (%s×) |\n" \
        "$name" "$(mib "$bytes")" "$t_ours" "$t_tar" "$(ratio "$t_tar" "$t_ours")" "$(mib "$a_ours")" "$(mib "$a_tar")" \
        "$(python3 -c "print(f'{($a_ours / $a_tar - 1) * 100:+.3f}')")" \
        "$t_restore" "$t_xtar" "$(ratio "$t_xtar" "$t_restore")" \
        "$(python3 -c "print(f'{$set_bytes/1048576/max($t_verify,0.001):.0f}')")" "$(python3 -c "print(f'{$set_bytes/1048576/max($t_sha,0.001):.0f}')")" "$(ratio "$t_sha" "$t_verify")" \
        "$t_noop" "$t_hash" "$(ratio "$t_noop" "$t_hash")" "$(python3 -c "print(f'{$rss/1024:.0f}')")" \
        "$t_zb" "$(mib "$z_bytes")" "$(ratio "$t_tar" "$t_zb")" "$t_zr" "$(ratio "$t_xtar" "$t_zr")" >> "$out"
    rm -rf "$work/$name"
done
cat "$out"
