#!/usr/bin/env bash
# Runs this target's role (tasks/main.yml) through ansible-playbook rather than letting
# ansible-test run it: ansible-test turns deprecation warnings off, and expect fails on any.
set -euo pipefail
source ../setup_playbook_runs/playbook-runs.sh
export ANSIBLE_ROLES_PATH=..
expect changed ansible-playbook -i "$INVENTORY_PATH" -e @../../integration_config.yml runme.yml
