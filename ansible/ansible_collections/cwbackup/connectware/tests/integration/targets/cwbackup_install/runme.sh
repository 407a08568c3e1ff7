#!/usr/bin/env bash
# The role cwbackup.connectware.install: in check mode it writes nothing; applied, it installs;
# applied again, it changes nothing; what it wrote passes systemd-analyze verify and runs.
set -euo pipefail
source ../setup_playbook_runs/playbook-runs.sh

config=../../integration_config.yml
work="$(sed -n 's/^cw_workdir: //p' "$config")/install"
rm -rf "$work"
# What a host has before the role: /usr/local/bin and /etc/systemd/system.
mkdir -p "$work/volume/services" "$work/bin" "$work/units"
echo "description: opcua" > "$work/volume/services/opcua.yml"
cat > "$work/inventory" <<'INI'
[connectware]
testhost ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}'
INI
run() { ansible-playbook -i "$work/inventory" -e "@$config" -e "work=$work" "$@"; }

command -v systemd-analyze > /dev/null || { echo "FAIL: systemd-analyze is missing (scripts/ansible-test.sh installs it)"; exit 1; }
expect changed run install.yml --check
[ -z "$(find "$work/units" "$work/bin" "$work/etc" -type f 2>/dev/null)" ] || { echo "FAIL: check mode wrote files"; exit 1; }
expect changed run install.yml
expect unchanged run install.yml
expect unchanged run install.yml --check
expect changed run check.yml
echo "install role: all runs as expected"
