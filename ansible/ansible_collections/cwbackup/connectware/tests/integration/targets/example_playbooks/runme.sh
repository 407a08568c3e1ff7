#!/usr/bin/env bash
# Runs each example playbook of ansible/playbooks/ against the emulator, with variables alone:
# twice (the second run changes nothing), and in check mode (which writes nothing).
set -euo pipefail
source ../setup_playbook_runs/playbook-runs.sh

config=../../integration_config.yml
# Written by scripts/ansible-test.sh, one `key: value` a line.
playbooks=$(sed -n 's/^cw_playbooks: //p' "$config")
work="$(sed -n 's/^cw_workdir: //p' "$config")/playbooks"
rm -rf "$work"
mkdir -p "$work/volume/services"
echo "description: opcua" > "$work/volume/services/opcua.yml"

cat > "$work/inventory" <<'INI'
[connectware]
testhost ansible_connection=local ansible_python_interpreter='{{ ansible_playbook_python }}' ansible_become=false
INI
# The variables an operator sets, here pointing at the emulator and a directory as the volume
# (cwbackup_binary comes with the integration config).
cat > "$work/vars.yml" <<YAML
cwbackup_repository: $work/repository
cwbackup_volume: {path: $work/volume}
connectware_url: "{{ cw_url }}"
connectware_admin_password: "{{ cw_password }}"
connectware_ca_file: "{{ cw_ca_file }}"
connectware_restart_command: [touch, $work/restarted]
YAML
run() { ansible-playbook -i "$work/inventory" -e "@$config" -e "@$work/vars.yml" "$playbooks/$1" "${@:2}"; }
sets() { find "$work/repository" -mindepth 1 -maxdepth 1 -type d -not -name '.*' 2>/dev/null | sort; }
digest() { (cd "$work/volume" && find . -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum); }

echo "=== nightly-backup.yml"
expect changed run nightly-backup.yml --check
[ -z "$(sets)" ] || { echo "FAIL: check mode wrote a set: $(sets)"; exit 1; }
expect changed run nightly-backup.yml
first=$(sets)
[ "$(echo "$first" | grep -c .)" = 1 ] || { echo "FAIL: expected one set, got: $first"; exit 1; }
expect unchanged run nightly-backup.yml
[ "$(sets)" = "$first" ] || { echo "FAIL: the second run wrote a set"; exit 1; }
# With the API, check mode cannot compare the database (no server-side backup in a dry run),
# so it reports the backup as to be done; it must still write nothing.
expect changed run nightly-backup.yml --check
expect_output 'a dry run cannot tell whether the database changed'
[ "$(sets)" = "$first" ] || { echo "FAIL: check mode wrote a set"; exit 1; }

echo "=== restore.yml"
echo "description: added after the backup" > "$work/volume/services/new.yml"
changed_digest=$(digest)
expect changed run restore.yml --check
[ "$(digest)" = "$changed_digest" ] || { echo "FAIL: check mode changed the volume"; exit 1; }
[ ! -e "$work/restarted" ] || { echo "FAIL: check mode ran the restart handler"; exit 1; }
expect changed run restore.yml
[ ! -e "$work/volume/services/new.yml" ] || { echo "FAIL: the restore left the new file"; exit 1; }
[ -e "$work/restarted" ] || { echo "FAIL: the restart handler did not run"; exit 1; }
rm "$work/restarted"
expect unchanged run restore.yml
[ ! -e "$work/restarted" ] || { echo "FAIL: an unchanged restore restarted Connectware"; exit 1; }

echo "=== verify-monitoring.yml"
expect unchanged run verify-monitoring.yml
expect unchanged run verify-monitoring.yml
expect unchanged run verify-monitoring.yml --check
expect unchanged run verify-monitoring.yml -e cwbackup_fail_on_drift=true
echo "description: drift" > "$work/volume/services/drift.yml"
expect unchanged run verify-monitoring.yml
expect_output 'services/drift.yml'
expect failed run verify-monitoring.yml -e cwbackup_fail_on_drift=true
expect_output 'backup set .*: the live volume drifted from the set: 1 added \[services/drift.yml\]'
expect failed run verify-monitoring.yml -e cwbackup_max_age_h=0
expect_output 'no backup set younger than 0 h \(newest: [0-9]'
echo "=== nightly-backup.yml, then a copy off-site (SeaweedFS)"
s3_endpoint=$(sed -n 's/^cw_s3_endpoint: //p' "$config")
cat > "$work/offsite.yml" <<YAML
cwbackup_offsite_repository:
  s3:
    endpoint: $s3_endpoint
    bucket: $(sed -n 's/^cw_s3_bucket: //p' "$config")
    prefix: connectware/plant-7
    region: us-east-1
    access_key_id: $(sed -n 's/^cw_s3_key_id: //p' "$config")
    secret_access_key_file: $(sed -n 's/^cw_s3_secret_file: //p' "$config")
cwbackup_offsite_keep_last: 2
YAML
offsite_sets() {
    printf '{"operation":"list","repository":%s}' \
        "$(python3 -c 'import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))["cwbackup_offsite_repository"]))' "$work/offsite.yml")" |
        "$(sed -n 's/^cwbackup_binary: //p' "$config")" | python3 -c 'import json, sys; print(" ".join(s["id"] for s in json.load(sys.stdin)["sets"]))'
}
expect changed run nightly-backup.yml -e "@$work/offsite.yml"
expect_output 'off-site: copied'
local_sets=$(sets | xargs -n1 basename | sort -r | tr '\n' ' ' | sed 's/ $//')
remote=$(offsite_sets)
[ -n "$remote" ] || { echo "FAIL: nothing in the off-site repository"; exit 1; }
case " $local_sets " in *" ${remote%% *} "*) ;; *) echo "FAIL: off-site holds $remote, local $local_sets"; exit 1 ;; esac
expect unchanged run nightly-backup.yml -e "@$work/offsite.yml"
[ "$(offsite_sets)" = "$remote" ] || { echo "FAIL: the second run changed the off-site sets"; exit 1; }
echo "example playbooks: all runs as expected"
