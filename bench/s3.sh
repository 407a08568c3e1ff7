#!/usr/bin/env bash
# Backup to an S3 bucket, side by side in the same run with what an operator would script:
#   cwbackup backup (repository {"s3": …})   vs   tar czf - VOL | aws s3 cp - s3://…
#   cwbackup restore from the bucket          vs   aws s3 cp s3://… - | tar xzf -
# against a local SeaweedFS (scripts/seaweedfs.sh) on 127.0.0.1, volumes on tmpfs; each time
# the best of RUNS (default 3), with peak RSS. awscli comes from PyPI into target/ if missing.
# Usage: [RUNS=n] [BIN=path] [OUT=file] bench/s3.sh   — BIN defaults to a release build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time; }
if [ -n "${BIN:-}" ]; then bin=$(realpath "$BIN"); else
    cargo build --release --locked --quiet; bin="$root/target/release/cwbackup"; fi
weed=$("$root/scripts/seaweedfs.sh")
aws=$(command -v aws || true)
if [ -z "$aws" ]; then
    python3 -m venv "$root/target/awscli-venv" && "$root/target/awscli-venv/bin/pip" install -q awscli
    aws="$root/target/awscli-venv/bin/aws"
fi
runs=${RUNS:-3}
out=${OUT:-"$root/bench/s3-results.md"}
work=$(mktemp -d /dev/shm/cwbackup-s3bench.XXXX)
export AWS_ACCESS_KEY_ID=benchkey AWS_SECRET_ACCESS_KEY=bench-secret-key AWS_DEFAULT_REGION=us-east-1
port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
base=$((port % 20000 + 30000))
"$weed" mini -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$work/weed" -bucket=bench -master.telemetry=false -admin.ui=false \
    -s3.port=$base -s3.port.grpc=$((base+1)) -s3.port.iceberg=$((base+2)) -s3.port.lance=$((base+3)) \
    -admin.port=$((base+4)) -admin.port.grpc=$((base+5)) -debug.port=$((base+6)) -filer.port=$((base+7)) \
    -filer.port.grpc=$((base+8)) -master.port=$((base+9)) -master.port.grpc=$((base+10)) \
    -volume.port=$((base+11)) -volume.port.grpc=$((base+12)) -webdav.port=$((base+13)) > "$work/weed.log" 2>&1 &
weed_pid=$!
trap 'kill $weed_pid; wait $weed_pid 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/weed"
endpoint="http://127.0.0.1:$base"
for _ in $(seq 100); do "$aws" --endpoint-url "$endpoint" s3 ls s3://bench >/dev/null 2>&1 && break; sleep 0.3; done

measure() { /usr/bin/time -f "%e %M" -o "$work/time" bash -c "$1" > /dev/null 2> "$work/stderr" || { cat "$work/stderr"; exit 1; }; cat "$work/time"; }
best() { local t r bt="" br=0; for _ in $(seq "$runs"); do eval "$1"; read -r t r < <(measure "$2")
    if [ -z "$bt" ] || awk "BEGIN{exit !($t < $bt)}"; then bt=$t; fi; [ "$r" -gt "$br" ] && br=$r; done; echo "$bt $br"; }

{
echo "# S3 backup and restore: cwbackup vs tar | aws s3 cp"
echo
echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(nproc) cores; SeaweedFS $("$weed" version 2>/dev/null | head -1 | awk '{print $3}') on 127.0.0.1; volumes on tmpfs; best of $runs; binary: ${BIN:-release build}"
echo
echo "| volume | cwbackup backup | tar czf \\| aws s3 cp | ratio | cwbackup restore | aws s3 cp \\| tar xzf | ratio | cwbackup peak RSS backup / restore |"
echo "|---|---|---|---|---|---|---|---|"
} > "$out"
for spec in "small-files 20000 20480 yaml" "large-files 4 67108864 half"; do
    read -r name count size kind <<< "$spec"
    vol="$work/$name"; python3 "$root/bench/gen.py" "$vol" "$count" "$size" "$kind"
    repo="{\"s3\":{\"endpoint\":\"$endpoint\",\"bucket\":\"bench\",\"prefix\":\"$name\"}}"
    read -r cb cr < <(best "" "echo '{\"operation\":\"backup\",\"force\":true,\"repository\":$repo,\"volume\":{\"path\":\"$vol\"}}' | $bin")
    read -r tb _ < <(best "" "tar czf - -C '$vol' . | '$aws' --endpoint-url $endpoint s3 cp - s3://bench/tar/$name.tgz")
    mkdir -p "$work/restored"
    read -r crs crr < <(best "rm -rf '$work/restored'; mkdir -p '$work/restored'" "echo '{\"operation\":\"restore\",\"force\":true,\"safety_backup\":false,\"repository\":$repo,\"volume\":{\"path\":\"$work/restored\"}}' | $bin")
    read -r trs _ < <(best "rm -rf '$work/restored'; mkdir -p '$work/restored'" "'$aws' --endpoint-url $endpoint s3 cp s3://bench/tar/$name.tgz - | tar xzf - -C '$work/restored'")
    rss="$((cr / 1024)) / $((crr / 1024))"
    echo "| $name ($(du -sh "$vol" | cut -f1)) | ${cb}s | ${tb}s | $(awk "BEGIN{printf \"%.2f\", $cb/$tb}") | ${crs}s | ${trs}s | $(awk "BEGIN{printf \"%.2f\", $crs/$trs}") | ${rss} MiB |" >> "$out"
    rm -rf "$vol"
done
echo >> "$out"
echo "cwbackup's backup also reads the new set back (its checksums) and copies it server-side out of .staging/ before publishing; the tar pipeline does neither." >> "$out"
cat "$out"
