#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, cwbackup developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup_info
short_description: List and verify the backup sets of a Cybus Connectware installation, changing nothing
version_added: "0.2.0"
description:
  - Runs the C(cwbackup) binary with a C(list) or C(verify) task and returns its result. Neither operation writes,
    deletes or restores anything, so this module never reports C(changed) and runs the same in check mode.
  - O(operation=verify) fails (C(error.kind=integrity_error)) when a set does not match its manifest, and lists every
    problem in RV(findings). With O(against_live), drift of the live volume from a set is a finding of level
    C(warning), which does not fail the task; a playbook decides what drift means (see the examples).
  - The options are the keys of the cwbackup task that apply to C(list) and C(verify), one-to-one.
author:
  - cwbackup developers (@cwbackup)
extends_documentation_fragment:
  - cwbackup.connectware.cwbackup
  - cwbackup.connectware.cwbackup.volumes
attributes:
  check_mode:
    description: Listing and verifying change nothing, so check mode runs them as they are (the task's C(dry_run) is set).
    support: full
  diff_mode:
    description: Nothing changes, so there is nothing to show.
    support: none
options:
  operation:
    description:
      - V(list) returns the complete sets, newest first (RV(sets)).
      - V(verify) checks sets against their manifests (checksums, and with O(deep) the extracted trees), and with
        O(against_live) compares the live volume given by O(volume) or O(volumes) with a set.
      - O(volume) and O(volumes) apply to V(verify) with O(against_live) only.
    type: str
    required: true
    choices: [list, verify]
  backup_id:
    description:
      - O(operation=verify) the set to check (default every set); with O(against_live), the set to compare the live
        volume with (default the newest that is not a C(pre-restore-) safety set).
    type: str
  deep:
    description: O(operation=verify) also extract each set into a temporary directory and compare the extracted tree with the manifest.
    type: bool
    default: false
  against_live:
    description: O(operation=verify) compare the live volume with a set and report drift as findings of level C(warning).
    type: bool
    default: false
  encryption:
    description: Opening encrypted sets. A checksum-only verify and O(operation=list) need no key.
    type: dict
    suboptions:
      identity_file:
        description:
          - An age identity file as C(age-keygen -o) writes it. Needed for O(deep) and O(against_live) on an encrypted
            set; a key that does not open it is C(error.kind=encryption_error).
        type: path
seealso:
  - module: cwbackup.connectware.backup
    description: Backs up, restores, prunes and imports; it also lists and verifies, but may report C(changed) for the other operations.
'''

EXAMPLES = r'''
- name: List the sets
  cwbackup.connectware.backup_info:
    operation: list
    repository: /backup/connectware
  register: listing

- name: Fail when the newest set is older than 26 hours
  ansible.builtin.assert:
    that:
      - listing.sets | length > 0
      - listing.sets[0].age_s < 26 * 3600
    fail_msg: "no backup in the last 26 hours (newest: {{ listing.sets[0].id | default('none') }})"

- name: Verify every set, extracting each (fails on damage with error.kind integrity_error)
  cwbackup.connectware.backup_info:
    operation: verify
    repository: /backup/connectware
    deep: true

- name: Compare the live volume with the newest set
  cwbackup.connectware.backup_info:
    operation: verify
    repository: /backup/connectware
    against_live: true
    volume:
      docker_volume: connectware_service-manager
  register: verified

- name: Fail on drift
  ansible.builtin.assert:
    that: verified.findings | selectattr('component', 'equalto', 'live') | list | length == 0
    fail_msg: "{{ verified.findings | map(attribute='message') | join('; ') }}"
'''

RETURN = r'''
ok:
  description: Whether the task succeeded; the module fails exactly when it is false.
  returned: always
  type: bool
  sample: true
msg:
  description: One human sentence saying what happened.
  returned: always
  type: str
  sample: 2 complete set(s), the newest 20261127T021500.123Z-1.10.2
operation:
  description: The operation that ran; null when the binary could not read the task.
  returned: always
  type: str
  sample: verify
dry_run:
  description: Whether this was a check-mode run; list and verify report the same either way.
  returned: always
  type: bool
  sample: false
components:
  description: O(operation=verify) the components of the set checked (the named set, or else the newest that is not a safety set).
  returned: verify
  type: list
  elements: dict
  contains:
    name:
      description: The component's name, C(volume), a volume's name (O(volumes)), C(files) or C(db).
      type: str
      sample: volume
    kind:
      description: C(volume), C(files) or C(db).
      type: str
      sample: volume
    changed:
      description: Always false.
      type: bool
      sample: false
    files:
      description: Entries below the tree's root (volumes and files only).
      type: int
      sample: 2
    bytes:
      description: Sum of the file sizes (trees), or the database file's size.
      type: int
      sample: 19
    content_digest:
      description: The component's content digest.
      type: str
      sample: "sha256:708c226ce4efc14646e12450ae1b54f2f632309ba1f632f92d6ccde0a2284fe3"
    path:
      description: The live directory (volumes and files only).
      type: str
      sample: /var/lib/docker/volumes/connectware_service-manager/_data
    backup_id:
      description: The server's id of the database backup (db only).
      type: str
      sample: 1.10.2_2026-11-27T02:15:00.213Z
    status_message:
      description: The server's last status message (db only).
      type: str
      sample: OK
sets:
  description: O(operation=list) every complete set, newest first.
  returned: list
  type: list
  elements: dict
  contains:
    id:
      description: The set's id.
      type: str
      sample: 20261127T021500.123Z-1.10.2
    created_at:
      description: When the set was made (RFC 3339, UTC).
      type: str
      sample: "2026-11-27T02:15:00.123Z"
    age_s:
      description: Seconds since the set was made.
      type: int
      sample: 3600
    bytes:
      description: Bytes on disk of the set's files.
      type: int
      sample: 441
    components:
      description: The names of the set's components.
      type: list
      elements: str
      sample: [volume, db]
    connectware_version:
      description: The Connectware version the set was taken from, if known.
      type: str
      sample: 1.10.2
findings:
  description: O(operation=verify) every problem found in every set checked; C(error) findings fail the task.
  returned: verify
  type: list
  elements: dict
  contains:
    level:
      description: C(error) (the set cannot be trusted) or C(warning) (worth knowing, for example drift of the live volume).
      type: str
      sample: error
    set:
      description: The set the finding is about.
      type: str
      sample: 20261127T021500.123Z-1.10.2
    component:
      description: C(manifest), a component's name, or C(live) for the live volume (O(against_live)).
      type: str
      sample: volume
    message:
      description: What is wrong.
      type: str
      sample: >-
        volume.tar.gz has sha256 0e10015282a5d6a532a3d244919acf99ea98b7f8983e6b3374934d59ae875a9c,
        the manifest says 13979588ee0116f956fc14ea0410a7f6c30ece97e14c35e1f1d49350159a6765
restart_required:
  description: Always false; list and verify restore nothing.
  returned: when the binary printed a result
  type: bool
  sample: false
warnings:
  description:
    - What the operator should know that did not stop the task, as Ansible shows warnings.
    - For example a directory in the repository that is not a usable set (an interrupted backup).
  returned: when the binary warned
  type: list
  elements: str
  sample: ["20261127T021500.123Z-1.10.2 is not a usable set: it has no manifest.json"]
error:
  description: Why the task failed.
  returned: on failure
  type: dict
  contains:
    kind:
      description:
        - One of a stable list that playbooks may match on, C(invalid_task), C(volume_not_found), C(repository_error),
          C(backup_not_found), C(integrity_error), C(unsafe_archive), C(consistency_error), C(api_unreachable),
          C(api_auth_failed), C(api_tls_error), C(api_protocol_error), C(db_backup_failed), C(db_restore_failed),
          C(version_incompatible), C(timeout), C(busy), C(no_space), C(io_error), C(docker_error),
          C(encryption_error) or C(internal_error).
      type: str
      sample: integrity_error
    message:
      description: What failed, on what, and what to do about it.
      type: str
      sample: >-
        2 problem(s) in 2 set(s) checked, first in set-1 (volume): volume.tar.gz has sha256 0e10..., the manifest
        says 1397...; do not restore from a damaged set
    retryable:
      description: Whether the same task may succeed if simply run again later.
      type: bool
      sample: false
    details:
      description: Machine-readable facts, for example the lock holder for C(busy), C(last_compatible_version) for C(version_incompatible).
      type: dict
      sample: {host: cw-prod-1, pid: 4242, operation: backup, since: "2026-11-27T02:15:00.000Z", lock_file: /backup/connectware/.lock}
duration_ms:
  description: Wall-clock time of the task in milliseconds.
  returned: when the binary printed a result
  type: int
  sample: 292
stderr:
  description: The binary's log and progress (its standard error).
  returned: when the binary wrote any
  type: str
  sample: "cwbackup: backup: volume 3 files, 38 B; database 1.10.2_2026-11-27T02:15:00.213Z\n"
rc:
  description: Exit code of the binary, when its output could not be read as a result.
  returned: when the binary printed no JSON result
  type: int
  sample: 139
stdout:
  description: What the binary printed instead of a result.
  returned: when the binary printed no JSON result
  type: str
  sample: ""
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.cwbackup.connectware.plugins.module_utils.cwbackup import (
    build_task, common_options, finish, run, volume_options,
)


def argument_spec():
    """The options: the task keys that apply to list and verify (but dry_run, which comes from check mode)."""
    spec = common_options()
    spec.update(volume_options())
    spec.update(
        operation=dict(type='str', required=True, choices=['list', 'verify']),
        backup_id=dict(type='str'),
        deep=dict(type='bool', default=False),
        against_live=dict(type='bool', default=False),
        encryption=dict(
            type='dict',
            options=dict(
                identity_file=dict(type='path'),
            ),
        ),
    )
    return spec


def main():
    spec = argument_spec()
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=[('volume', 'volumes')],
        supports_check_mode=True,
    )
    task = build_task(module.params, spec, module.check_mode, diff_mode=False)
    result = run(module, task)
    # list and verify never change anything; a result that said otherwise would be a bug in
    # the binary, and an _info module must not pass it on.
    result['changed'] = False
    finish(module, result)


if __name__ == '__main__':
    main()
