#!/usr/bin/env bash
# Benchmarks cwbackup side by side with GNU tar and coreutils in the same run, on tmpfs:
#   backup   vs  tar czf        (time, output size)
#   restore  vs  tar xzf        (time)
#   verify   vs  sha256sum      (throughput over the set's files)
#   no-op re-run  vs  hashing the volume (sha256sum of every file)
# and cwbackup's peak RSS (/usr/bin/time), also on a 2 GiB volume.
# Usage: bench/run.sh [quick]   — writes bench/results.md
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
cargo build --release --locked --quiet
bin="$root/target/release/cwbackup"
work=$(mktemp -d /dev/shm/cwbackup-bench.XXXX)
trap 'rm -rf "$work"' EXIT
out="$root/bench/results.md"
quick=${1:-}

# name count size kind (see gen.py)
datasets=("small-files 20000 20480 yaml" "large-files 4 134217728 half")
[ "$quick" = quick ] && datasets=("small-files 2000 20480 yaml" "large-files 2 33554432 half")
[ "$quick" = quick ] || datasets+=("2GiB 16 134217728 half")

measure() { # prints "seconds maxrss_kib" of a command
    /usr/bin/time -f "%e %M" -o "$work/time" "$@" > /dev/null 2> "$work/stderr" || { cat "$work/stderr"; exit 1; }
    cat "$work/time"
}
ratio() { python3 -c "print(f'{$1 / max($2, 0.001):.2f}')"; }
mib() { python3 -c "print(f'{$1 / 1048576:.0f}')"; }

{
echo "# cwbackup benchmark"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); data on tmpfs; cwbackup $($bin --version | cut -d' ' -f2), $(tar --version | head -1)."
echo
echo "| dataset | volume MiB | backup s (tar czf s) | speed-up | archive MiB (tar MiB) | restore s (tar xzf s) | speed-up | verify MiB/s (sha256sum MiB/s) | ratio | no-op s (hash s) | ratio | peak RSS MiB | zstd backup s, MiB (speed-up) | zstd restore s (speed-up) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} > "$out"

for spec in "${datasets[@]}"; do
    read -r name count size kind <<< "$spec"
    vol="$work/$name/vol"; repo="$work/$name/repo"
    mkdir -p "$vol"
    python3 "$root/bench/gen.py" "$vol" "$count" "$size" "$kind"
    bytes=$(du -sb "$vol" | cut -f1)
    task="{\"operation\":\"backup\",\"repository\":\"$repo\",\"volume\":{\"path\":\"$vol\"}}"
    echo "$task" > "$work/backup.json"

    read -r t_tar _ < <(measure tar czf "$work/$name/tar.tgz" -C "$vol" .)
    read -r t_ours rss_backup < <(measure "$bin" "$work/backup.json")
    set_dir=$(ls -d "$repo"/*/ | head -1)
    a_ours=$(stat -c %s "$set_dir/volume.tar.gz"); a_tar=$(stat -c %s "$work/$name/tar.tgz")

    # Restore onto a changed volume (so the volume is really replaced) vs tar xzf into an empty dir.
    echo changed > "$vol/changed.txt"
    echo "{\"operation\":\"restore\",\"repository\":\"$repo\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false}" > "$work/restore.json"
    mkdir -p "$work/$name/x"
    read -r t_xtar _ < <(measure tar xzf "$work/$name/tar.tgz" -C "$work/$name/x")
    rm -rf "$work/$name/x"
    read -r t_restore rss_restore < <(measure "$bin" "$work/restore.json")

    echo "{\"operation\":\"verify\",\"repository\":\"$repo\"}" > "$work/verify.json"
    read -r t_sha _ < <(measure sha256sum "$set_dir"/volume.tar.gz)
    read -r t_verify rss_verify < <(measure "$bin" "$work/verify.json")
    set_bytes=$(stat -c %s "$set_dir/volume.tar.gz")

    read -r t_hash _ < <(measure sh -c "find '$vol' -type f -print0 | xargs -0 sha256sum")
    read -r t_noop rss_noop < <(measure "$bin" "$work/backup.json")

    # The same with compression zstd, into a second repository.
    zrepo="$work/$name/zrepo"
    echo "{\"operation\":\"backup\",\"repository\":\"$zrepo\",\"volume\":{\"path\":\"$vol\"},\"compression\":\"zstd\"}" > "$work/zbackup.json"
    read -r t_zb rss_zb < <(measure "$bin" "$work/zbackup.json")
    z_bytes=$(stat -c %s "$(ls -d "$zrepo"/*/ | head -1)/volume.tar.zst")
    echo changed > "$vol/changed.txt"
    echo "{\"operation\":\"restore\",\"repository\":\"$zrepo\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false}" > "$work/zrestore.json"
    read -r t_zr rss_zr < <(measure "$bin" "$work/zrestore.json")

    rss=$(printf "%s\n" "$rss_backup" "$rss_restore" "$rss_verify" "$rss_noop" "$rss_zb" "$rss_zr" | sort -n | tail -1)
    printf "| %s | %s | %s (%s) | %s× | %s (%s) | %s (%s) | %s× | %s (%s) | %s | %s (%s) | %s | %s | %s, %s (%s×) | %s (%s×) |\n" \
        "$name" "$(mib "$bytes")" "$t_ours" "$t_tar" "$(ratio "$t_tar" "$t_ours")" "$(mib "$a_ours")" "$(mib "$a_tar")" \
        "$t_restore" "$t_xtar" "$(ratio "$t_xtar" "$t_restore")" \
        "$(python3 -c "print(f'{$set_bytes/1048576/max($t_verify,0.001):.0f}')")" "$(python3 -c "print(f'{$set_bytes/1048576/max($t_sha,0.001):.0f}')")" "$(ratio "$t_sha" "$t_verify")" \
        "$t_noop" "$t_hash" "$(ratio "$t_noop" "$t_hash")" "$(python3 -c "print(f'{$rss/1024:.0f}')")" \
        "$t_zb" "$(mib "$z_bytes")" "$(ratio "$t_tar" "$t_zb")" "$t_zr" "$(ratio "$t_xtar" "$t_zr")" >> "$out"
    rm -rf "$work/$name"
done
cat "$out"
