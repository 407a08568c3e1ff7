#!/usr/bin/env bash
# What encryption at rest (SPEC §11) costs, side by side in one run, on tmpfs:
#   cwbackup backup / restore, plain  vs  the same with `encryption` (age, one X25519 recipient)
#   and the pipeline an operator would use instead: tar czf - | age -r  /  age -d | tar xzf -
# Each figure is the best of RUNS runs (default 3) of wall-clock seconds, with the user+system
# CPU seconds of that run beside it (CPU time is steadier than wall time on a shared machine).
# The restore is a full one: into an emptied volume, without a safety set.
# Usage: [RUNS=n] [BIN=path] [OUT=file] bench/encryption.sh [quick]  — writes bench/encryption.md
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
command -v age >/dev/null || { apt-get update -qq && apt-get install -y -qq age; }
if [ -n "${BIN:-}" ]; then
    bin=$(realpath "$BIN")
else
    cargo build --release --locked --quiet
    bin="$root/target/release/cwbackup"
fi
work=$(mktemp -d /dev/shm/cwbackup-bench-age.XXXX)
trap 'rm -rf "$work"' EXIT
out=${OUT:-"$root/bench/encryption.md"}
runs=${RUNS:-3}
datasets=("small-files 20000 20480 yaml" "large-files 4 134217728 half")
[ "${1:-}" = quick ] && { datasets=("small-files 2000 20480 yaml" "large-files 2 33554432 half"); runs=${RUNS:-1}; }

age-keygen -o "$work/key.txt" 2> /dev/null
recipient=$(age-keygen -y "$work/key.txt")

# best SETUP CMD...: prints "wall cpu" of the run with the shortest wall time.
best() {
    local setup=$1 best_w="" best_c=""
    shift
    for _ in $(seq "$runs"); do
        eval "$setup"
        /usr/bin/time -f "%e %U %S" -o "$work/time" "$@" > /dev/null 2> "$work/stderr" || { cat "$work/stderr"; exit 1; }
        read -r w u s < "$work/time"
        if [ -z "$best_w" ] || python3 -c "import sys; sys.exit(0 if $w < $best_w else 1)"; then
            best_w=$w; best_c=$(python3 -c "print(f'{$u + $s:.2f}')")
        fi
    done
    echo "$best_w $best_c"
}
pct() { python3 -c "print(f'{($1 / max($2, 0.001) - 1) * 100:+.0f} %')"; }

{
echo "# Encryption at rest: cost"
echo
echo "$(date -u +%Y-%m-%d), $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1) (SHA extensions: $(grep -q ' sha_ni' /proc/cpuinfo && echo yes || echo no)); data on tmpfs; best of $runs runs, wall s (CPU s); cwbackup $($bin --version | cut -d' ' -f2), $(age --version 2>&1 | head -1 | sed 's/^/age /')."
echo
echo "| dataset | MiB | backup plain | backup age | cost | tar czf \| age -r | restore plain | restore age | cost | age -d \| tar xzf |"
echo "|---|---|---|---|---|---|---|---|---|---|"
} > "$out"

for spec in "${datasets[@]}"; do
    read -r name count size kind <<< "$spec"
    vol="$work/$name/vol"; plain="$work/$name/plain"; enc="$work/$name/enc"
    mkdir -p "$vol"
    python3 "$root/bench/gen.py" "$vol" "$count" "$size" "$kind"
    bytes=$(du -sb "$vol" | cut -f1)
    echo "{\"operation\":\"backup\",\"repository\":\"$plain\",\"volume\":{\"path\":\"$vol\"}}" > "$work/b-plain.json"
    echo "{\"operation\":\"backup\",\"repository\":\"$enc\",\"volume\":{\"path\":\"$vol\"},\"encryption\":{\"recipients\":[\"$recipient\"]}}" > "$work/b-age.json"
    echo "{\"operation\":\"restore\",\"repository\":\"$plain\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false}" > "$work/r-plain.json"
    echo "{\"operation\":\"restore\",\"repository\":\"$enc\",\"volume\":{\"path\":\"$vol\"},\"safety_backup\":false,\"encryption\":{\"identity_file\":\"$work/key.txt\"}}" > "$work/r-age.json"

    read -r bp bpc < <(best "rm -rf $plain" "$bin" "$work/b-plain.json")
    read -r ba bac < <(best "rm -rf $enc" "$bin" "$work/b-age.json")
    read -r bt btc < <(best "rm -f $work/$name/x.age" sh -c "tar czf - -C '$vol' . | age -r '$recipient' > '$work/$name/x.age'")
    # Full restores: the volume emptied first (its files kept aside to put back for the next).
    cp -a "$vol" "$work/$name/orig"
    empty="find '$vol' -mindepth 1 -delete"
    read -r rp rpc < <(best "$empty" "$bin" "$work/r-plain.json")
    read -r ra rac < <(best "$empty" "$bin" "$work/r-age.json")
    read -r rt rtc < <(best "rm -rf $work/$name/x; mkdir $work/$name/x" sh -c "age -d -i '$work/key.txt' '$work/$name/x.age' | tar xzf - -C '$work/$name/x'")
    diff -r "$work/$name/orig" "$vol" > /dev/null || { echo "the encrypted restore differs from the volume"; exit 1; }
    printf "| %s | %s | %s (%s) | %s (%s) | %s | %s (%s) | %s (%s) | %s (%s) | %s | %s (%s) |\n" \
        "$name" "$(python3 -c "print(f'{$bytes / 1048576:.0f}')")" \
        "$bp" "$bpc" "$ba" "$bac" "$(pct "$ba" "$bp")" "$bt" "$btc" \
        "$rp" "$rpc" "$ra" "$rac" "$(pct "$ra" "$rp")" "$rt" "$rtc" >> "$out"
    rm -rf "$work/$name"
done
cat "$out"
