#!/usr/bin/env bash
# The full-installation playbooks against the machine's real Docker Engine (SPEC §9):
# nightly-backup.yml with cwbackup_installation (every volume of a compose project, .env and
# docker-compose.yml, the containers stopped while read, the database through the emulator's
# API) twice, then the host is "lost" (containers, volumes and install directory removed) and
# disaster-recovery.yml rebuilds it: in check mode (nothing created), for real (volumes
# recreated with the compose labels, files with their modes, `compose up` starts the services
# on them), and again (changed=0). The containers run the offline test image
# (scripts/docker-test-image.sh); nothing is pulled.
set -euo pipefail
source ../setup_playbook_runs/playbook-runs.sh

config=../../integration_config.yml
playbooks=$(sed -n 's/^cw_playbooks: //p' "$config")
docker_required=$(sed -n 's/^cw_docker_required: //p' "$config")
work="$(sed -n 's/^cw_workdir: //p' "$config")/installation"
image=cwbackup-test/busybox:1

if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 || ! docker image inspect "$image" >/dev/null 2>&1; then
    if [ "$docker_required" = true ]; then
        echo "FAIL: the Docker engine or the image $image is missing, and CI needs these runs"
        exit 1
    fi
    echo "SKIP: no Docker engine (or no $image: run scripts/docker-test-image.sh)"
    exit 0
fi
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    echo "SKIP: neither docker compose nor docker-compose is installed"
    exit 0
fi

project="cwbpb$$"
install="$work/connectware"
rm -rf "$work"
mkdir -p "$install"
cleanup() {
    "${compose[@]}" -p "$project" -f "$work/compose.yml" down -v >/dev/null 2>&1 || true
    docker volume ls -q --filter "label=com.docker.compose.project=$project" | xargs -r docker volume rm -f >/dev/null 2>&1 || true
}
trap cleanup EXIT

idle="trap 'exit 0' TERM; while true; do sleep 1 & wait; done"
cat > "$install/docker-compose.yml" <<YAML
version: "2.4"
services:
  service-manager:
    image: $image
    command: ["sh", "-c", "$idle"]
    volumes: ["service-manager:/data"]
  postgresql:
    image: $image
    command: ["sh", "-c", "$idle"]
    volumes: ["postgresql:/data"]
volumes:
  service-manager: {}
  postgresql: {}
YAML
cp "$install/docker-compose.yml" "$work/compose.yml"
printf 'CYBUS_LICENSE_KEY=not-a-real-key\n' > "$install/.env"
chmod 600 "$install/.env"
up=("${compose[@]}" -p "$project" -f "$install/docker-compose.yml" up -d)
"${up[@]}"
container() { docker ps -q --filter "label=com.docker.compose.project=$project" --filter "label=com.docker.compose.service=$1"; }
docker exec "$(container service-manager)" sh -c 'echo "description: opcua" > /data/opcua.yml'
docker exec "$(container postgresql)" sh -c 'echo 13 > /data/PG_VERSION'

cat > "$work/inventory" <<'INI'
[connectware]
testhost ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}' ansible_become=false
INI
up_json=$(printf '"%s",' "${up[@]}")
cat > "$work/vars.yml" <<YAML
cwbackup_repository: $work/repository
cwbackup_installation: {compose_project: $project, install_dir: $install, stop_timeout_s: 10}
connectware_url: "{{ cw_url }}"
connectware_admin_password: "{{ cw_password }}"
connectware_ca_file: "{{ cw_ca_file }}"
connectware_up_command: [${up_json%,}]
YAML
run() { ansible-playbook -i "$work/inventory" -e "@$config" -e "@$work/vars.yml" "$playbooks/$1" "${@:2}"; }
sets() { find "$work/repository" -mindepth 1 -maxdepth 1 -type d -not -name '.*' 2>/dev/null | sort; }

echo "=== nightly-backup.yml, the whole installation"
expect changed run nightly-backup.yml
expect_output 'containers stopped for [0-9]+ ms'
first=$(sets)
[ "$(echo "$first" | grep -c .)" = 1 ] || { echo "FAIL: expected one set, got: $first"; exit 1; }
for f in volumes/service-manager.tar.gz volumes/postgresql.tar.gz files.tar.gz db.tgz; do
    [ -f "$first/$f" ] || { echo "FAIL: the set lacks $f"; exit 1; }
done
if [ -z "$(container service-manager)" ] || [ -z "$(container postgresql)" ]; then
    echo "FAIL: the containers do not run again"
    exit 1
fi
expect unchanged run nightly-backup.yml
[ "$(sets)" = "$first" ] || { echo "FAIL: the second run wrote a set"; exit 1; }

echo "=== the host is lost"
"${compose[@]}" -p "$project" -f "$work/compose.yml" down -v
rm -rf "$install"

echo "=== disaster-recovery.yml"
expect changed run disaster-recovery.yml --check
[ ! -e "$install" ] || { echo "FAIL: check mode created the install directory"; exit 1; }
[ -z "$(docker volume ls -q --filter "label=com.docker.compose.project=$project")" ] || { echo "FAIL: check mode created volumes"; exit 1; }
expect changed run disaster-recovery.yml
[ "$(stat -c %a "$install/.env")" = 600 ] || { echo "FAIL: .env is not 0600"; exit 1; }
cmp "$install/docker-compose.yml" "$work/compose.yml" || { echo "FAIL: docker-compose.yml differs"; exit 1; }
[ "$(docker exec "$(container service-manager)" cat /data/opcua.yml)" = "description: opcua" ] || { echo "FAIL: service-manager's volume"; exit 1; }
[ "$(docker exec "$(container postgresql)" cat /data/PG_VERSION)" = 13 ] || { echo "FAIL: postgresql's volume"; exit 1; }
expect unchanged run disaster-recovery.yml
echo "installation playbooks: all runs as expected"
