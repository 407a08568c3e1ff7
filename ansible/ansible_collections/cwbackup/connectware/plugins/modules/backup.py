#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, cwbackup developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type

DOCUMENTATION = r'''
---
module: backup
short_description: Back up, restore, verify, list, prune and import backups of a Cybus Connectware installation
version_added: "0.1.0"
description:
  - Runs the C(cwbackup) binary with one JSON task on standard input and returns its JSON result.
  - A Connectware installation's state is the service-manager volume plus the database of users,
    roles and permissions, which only the Connectware REST API can back up and restore. Both
    halves are taken and restored together.
  - Every option maps one-to-one onto a key of the cwbackup task (its C(schemas/task.schema.json));
    check mode sets C(dry_run), diff mode sets C(diff). All decisions (what changed, what to
    restore) are the binary's; this module only passes the task and returns the result.
  - Options that keep their default are not passed, so an option that does not apply to the
    O(operation) is refused only when it is set to something else.
author:
  - cwbackup developers (@cwbackup)
attributes:
  check_mode:
    description: Sets the task's C(dry_run); the binary decides and reports what would change and changes nothing.
    support: full
  diff_mode:
    description: Sets the task's C(diff); the result's C(diff) holds C(before) and C(after).
    support: full
options:
  operation:
    description:
      - V(backup) writes a new backup set (unless nothing changed), V(restore) puts one back,
        V(verify) checks sets against their manifests, V(list) shows the sets, V(prune) applies
        retention, V(copy) copies complete sets to the repository O(to), V(import) turns backups made by hand
        with the vendor's tar and curl commands into a set.
    type: str
    required: true
    choices: [backup, restore, verify, list, prune, copy, import]
  repository:
    description:
      - Where the backup sets are. A directory path (created with mode 0700 on the first backup),
        a dict with C(path), or an S3-compatible bucket, a dict with C(s3) holding C(endpoint), C(bucket),
        C(prefix), C(region), C(access_key_id), one secret, C(path_style), C(ca_file) and C(validate_certs).
      - For S3 give one secret, C(secret_access_key_file), C(secret_access_key_env) or
        C(secret_access_key) (hidden from the output); with neither a key id nor a secret the
        binary reads C(AWS_ACCESS_KEY_ID) and C(AWS_SECRET_ACCESS_KEY) from its environment.
    type: raw
    required: true
  to:
    description: O(operation=copy) the repository the sets are copied to, in the forms of O(repository).
    type: raw
  volume:
    description:
      - The service-manager volume. Absent, the volume half is skipped.
      - Give exactly one of O(volume.path) or O(volume.docker_volume).
    type: dict
    suboptions:
      path:
        description: The volume's directory.
        type: path
      docker_volume:
        description: The Docker volume's name, for example V(connectware_service-manager).
        type: str
  volumes:
    description:
      - Several volumes, each a component of its own in the set (C(volumes/<name>.tar.gz)). Not together with O(volume).
      - Each item gives exactly one of O(volumes[].path) or O(volumes[].docker_volume); O(volumes[].name) is required with O(volumes[].path).
    type: list
    elements: dict
    suboptions:
      path:
        description: The volume's directory.
        type: path
      docker_volume:
        description: The Docker volume's name, for example V(connectware_postgresql).
        type: str
      name:
        description:
          - The component's name in the set; default for a Docker volume its compose short name (label C(com.docker.compose.volume)), else its full name.
        type: str
  api:
    description:
      - Access to the Connectware REST API for the database half. Absent, the database half is skipped.
      - Give exactly one of O(api.password), O(api.password_file), O(api.password_env) or O(api.token).
    type: dict
    suboptions:
      url:
        description:
          - Base URL of Connectware, for example V(https://connectware.example).
          - V(https://) only, without a user or password in it (basic auth over plain HTTP would send the password in clear).
        type: str
        required: true
      username:
        description: User for basic authentication.
        type: str
        default: admin
      password:
        description: Password for basic authentication.
        type: str
      password_file:
        description: File whose content (without a trailing LF or CRLF) is the password; a regular file of at most 64 KiB.
        type: path
      password_env:
        description: Name of an environment variable (of the managed host) that holds the password.
        type: str
      token:
        description: Bearer token (a JWT from C(POST /api/login)), sent in the C(Authorization) header.
        type: str
      validate_certs:
        description: Check the server's TLS certificate. V(false) is insecure and adds a warning.
        type: bool
        default: true
      ca_file:
        description:
          - PEM bundle of certificates to trust, for example Connectware's C(cybus_ca.crt) or a self-signed server certificate.
          - A regular file of at most 1 MiB.
        type: path
      timeout_s:
        description:
          - The longest wait, in seconds, for one server-side backup or restore to finish.
          - Every request (the database upload and download included) ends by then.
          - At most V(604800) (7 days).
        type: float
        default: 1800
      connect_timeout_s:
        description:
          - How long, in seconds, a server that cannot be reached is retried before C(api_unreachable).
          - Unreachable means connection refused, no route, DNS, or a TLS handshake cut or never answered.
          - Independent of O(api.timeout_s).
          - At most V(604800) (7 days).
        type: float
        default: 60
      poll_interval_s:
        description: Seconds between two status requests while a server-side operation runs; at most V(3600).
        type: float
        default: 2
  encryption:
    description:
      - Encryption of the sets with age (X25519). O(operation=backup) and O(operation=import) encrypt every file of the new set
        to O(encryption.recipients) or O(encryption.recipients_file), stored as C(<file>.age).
      - O(operation=restore) and O(operation=verify) (with O(deep) or O(against_live)) need O(encryption.identity_file) for an encrypted set;
        a plain verify without it checks the checksums only.
    type: dict
    suboptions:
      recipients:
        description: The age public keys (C(age1...)) to encrypt to. Not together with O(encryption.recipients_file).
        type: list
        elements: str
      recipients_file:
        description: A file of recipients, one C(age1...) a line, C(#) comments allowed.
        type: path
      identity_file:
        description:
          - An age identity file as C(age-keygen -o) writes it; it opens an encrypted set.
          - With O(operation=backup), lets O(verify) read the new set back.
        type: path
  wait_for_lock_s:
    description: How long to wait for another cwbackup task to release the repository lock; V(0) fails at once. At most V(604800) (7 days).
    type: int
    default: 0
  backup_id:
    description:
      - O(operation=backup) the name of the new set (default C(<UTC time>-<Connectware version>)).
      - O(operation=restore) the set to restore (default the newest that is not a C(pre-restore-) safety set).
      - O(operation=verify) the set to check (default every set).
      - O(operation=import) the name of the new set (default C(imported-<UTC time>)).
    type: str
  force:
    description:
      - O(operation=backup) write a new set even if nothing changed.
      - O(operation=restore) restore even where the target matches, and a backup from a newer Connectware.
    type: bool
    default: false
  keep_last:
    description:
      - O(operation=backup) after a successful backup keep only this many newest regular sets (1 to 10000).
      - O(operation=prune) required; the number of newest regular sets to keep.
      - C(pre-restore-...) safety sets are counted apart (O(keep_safety)).
      - The set the task wrote or found unchanged, the newest set and the only set are never deleted.
    type: int
  keep_safety:
    description:
      - O(operation=backup) and O(operation=prune) how many of the newest C(pre-restore-...) safety sets retention keeps.
      - Applied only together with O(keep_last); the binary's default is 3.
    type: int
  verify:
    description: O(operation=backup) also decompress and read the whole new set before publishing it.
    type: bool
    default: false
  compression:
    description:
      - O(operation=backup) how to compress the volume archive.
      - V(gzip) (C(volume.tar.gz)) is read by GNU tar anywhere; V(zstd) (C(volume.tar.zst)) is several times faster, read with C(tar --zstd).
    type: str
    choices: [gzip, zstd]
    default: gzip
  safety_backup:
    description: O(operation=restore) back up the current state as a C(pre-restore-) set before changing anything.
    type: bool
    default: true
  restart:
    description: O(operation=restore) command (argv list, no shell) run after a restore that changed something.
    type: list
    elements: str
  deep:
    description: O(operation=verify) also extract each set and compare the extracted tree.
    type: bool
    default: false
  against_live:
    description: O(operation=verify) report drift of the live volume from the set as warnings.
    type: bool
    default: false
  volume_archive:
    description:
      - O(operation=import) a volume archive made by hand, for example with C(cd /var/lib/docker/volumes; tar cvfz x.tgz ./connectware_service-manager/_data),
        or an archive of the volume root itself; gzip, zstd or plain tar. It becomes the component C(volume).
    type: path
  db_file:
    description: O(operation=import) a database backup file as Connectware's API served it; kept byte for byte as the component C(db).
    type: path
  connectware_version:
    description: O(operation=import) the Connectware version the files were taken from, recorded in the manifest.
    type: str
  binary_path:
    description: Path of the cwbackup binary on the managed host. Default C(cwbackup) found on E(PATH).
    type: path
notes:
  - After a restore, Connectware must be restarted (use O(restart) or a handler on RV(restart_required))
    and every Admin-UI browser session must be restarted.
seealso:
  - name: cwbackup README
    description: The task and result formats, the backup set layout, and manual recovery with GNU tar.
    link: https://example.invalid/cwbackup
'''

EXAMPLES = r'''
- name: Nightly backup of both halves, keeping two weeks
  cwbackup.connectware.backup:
    operation: backup
    repository: /backup/connectware
    volume:
      docker_volume: connectware_service-manager
    api:
      url: https://connectware.example
      password: "{{ connectware_admin_password }}"
      ca_file: /opt/connectware/certs/cybus_ca.crt
    keep_last: 14

- name: Restore the newest set, then restart Connectware through a handler
  cwbackup.connectware.backup:
    operation: restore
    repository: /backup/connectware
    volume:
      docker_volume: connectware_service-manager
    api:
      url: https://connectware.example
      password_file: /etc/cwbackup/admin.pw
  register: restored
  notify: Restart Connectware

- name: Verify every set (fails with error.kind integrity_error on damage)
  cwbackup.connectware.backup:
    operation: verify
    repository: /backup/connectware
    deep: true

- name: Encrypted nightly backup (the identity file stays off this host)
  cwbackup.connectware.backup:
    operation: backup
    repository: /backup/connectware
    volume:
      docker_volume: connectware_service-manager
    encryption:
      recipients:
        - age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

- name: Restore an encrypted set with the identity that opens it
  cwbackup.connectware.backup:
    operation: restore
    repository: /backup/connectware
    volume:
      docker_volume: connectware_service-manager
    encryption:
      identity_file: /root/cwbackup-key.txt

- name: Bring in a backup made by hand with the vendor's commands
  cwbackup.connectware.backup:
    operation: import
    repository: /backup/connectware
    volume_archive: /tmp/connectware-volume-backup.tgz
    db_file: /tmp/connectware-db-backup.tgz
    connectware_version: "1.7.2"
'''

RETURN = r'''
ok:
  description: Whether the task succeeded.
  returned: always
  type: bool
msg:
  description: One human sentence saying what happened.
  returned: always
  type: str
operation:
  description: The operation that ran.
  returned: always
  type: str
dry_run:
  description: Whether this was a check-mode run.
  returned: always
  type: bool
backup:
  description: The set written, restored or found unchanged (C(id), C(path), C(manifest)).
  returned: when a set is involved
  type: dict
safety_backup:
  description: On restore, the C(pre-restore-) set holding the state from before.
  returned: when a restore changed something and O(safety_backup) is true
  type: dict
volume:
  description: What happened to the volume half (C(changed), C(path), C(files), C(bytes), C(content_digest)).
  returned: when the volume half was involved
  type: dict
components:
  description:
    - One entry per component written, found unchanged, restored or checked.
    - Each has C(name), C(kind), C(changed), and where they apply C(files), C(bytes), C(content_digest), C(path), C(backup_id), C(status_message).
  returned: backup, restore, verify, import
  type: list
  elements: dict
db:
  description: What happened to the database half (C(changed), C(backup_id), C(status_message)).
  returned: when the database half was involved
  type: dict
sets:
  description: O(operation=list) the complete sets, newest first; O(operation=prune) and backup retention, the sets deleted.
  returned: list, prune, backup with keep_last
  type: list
  elements: dict
findings:
  description: O(operation=verify) every problem found (C(level), C(set), C(component), C(message)).
  returned: verify
  type: list
  elements: dict
restart_required:
  description: Connectware must be restarted to use what was restored.
  returned: always
  type: bool
error:
  description: Why the task failed (C(kind), C(message), C(retryable), C(details)); C(kind) is one of a stable list.
  returned: on failure
  type: dict
duration_ms:
  description: Wall-clock time of the task in milliseconds.
  returned: always
  type: int
rc:
  description: Exit code of the binary, when its output could not be read.
  returned: when the binary printed no JSON result
  type: int
'''

import json

from ansible.module_utils.basic import AnsibleModule

# Options of this wrapper that are not task keys.
WRAPPER_ONLY = ('binary_path',)


def argument_spec():
    """The module's options: the task's keys (but dry_run and diff, which come from the modes)."""
    return dict(
        operation=dict(type='str', required=True, choices=['backup', 'restore', 'verify', 'list', 'prune', 'copy', 'import']),
        repository=dict(type='raw', required=True),
        to=dict(type='raw'),
        volume=dict(
            type='dict',
            options=dict(
                path=dict(type='path'),
                docker_volume=dict(type='str'),
            ),
            mutually_exclusive=[('path', 'docker_volume')],
            required_one_of=[('path', 'docker_volume')],
        ),
        volumes=dict(
            type='list',
            elements='dict',
            options=dict(
                path=dict(type='path'),
                docker_volume=dict(type='str'),
                name=dict(type='str'),
            ),
            mutually_exclusive=[('path', 'docker_volume')],
            required_one_of=[('path', 'docker_volume')],
            required_by={'path': 'name'},
        ),
        api=dict(
            type='dict',
            options=dict(
                url=dict(type='str', required=True),
                username=dict(type='str', default='admin'),
                password=dict(type='str', no_log=True),
                password_file=dict(type='path'),
                password_env=dict(type='str', no_log=False),
                token=dict(type='str', no_log=True),
                validate_certs=dict(type='bool', default=True),
                ca_file=dict(type='path'),
                timeout_s=dict(type='float', default=1800),
                connect_timeout_s=dict(type='float', default=60),
                poll_interval_s=dict(type='float', default=2),
            ),
            mutually_exclusive=[('password', 'password_file', 'password_env', 'token')],
            required_one_of=[('password', 'password_file', 'password_env', 'token')],
        ),
        encryption=dict(
            type='dict',
            options=dict(
                recipients=dict(type='list', elements='str'),
                recipients_file=dict(type='path'),
                identity_file=dict(type='path'),
            ),
            mutually_exclusive=[('recipients', 'recipients_file')],
        ),
        wait_for_lock_s=dict(type='int', default=0),
        backup_id=dict(type='str'),
        force=dict(type='bool', default=False),
        keep_last=dict(type='int', no_log=False),
        keep_safety=dict(type='int', no_log=False),
        verify=dict(type='bool', default=False),
        compression=dict(type='str', choices=['gzip', 'zstd'], default='gzip'),
        safety_backup=dict(type='bool', default=True),
        restart=dict(type='list', elements='str'),
        deep=dict(type='bool', default=False),
        against_live=dict(type='bool', default=False),
        volume_archive=dict(type='path'),
        db_file=dict(type='path'),
        connectware_version=dict(type='str'),
        binary_path=dict(type='path'),
    )


def without_defaults(params, spec):
    """Keeps the values that are set and differ from their default, recursively. The binary
    treats an absent key as its default, so nothing is lost, and a key that does not apply to
    the operation reaches it (and is refused) only when it was really set."""
    kept = {}
    for name, value in params.items():
        option = spec.get(name, {})
        if value is None or name in WRAPPER_ONLY:
            continue
        if option.get('type') == 'dict' and isinstance(value, dict):
            value = without_defaults(value, option.get('options', {}))
        elif option.get('type') == 'list' and option.get('elements') == 'dict':
            value = [without_defaults(item, option.get('options', {})) for item in value]
        elif 'default' in option and value == option['default']:
            continue
        kept[name] = value
    return kept


def build_task(params, check_mode, diff_mode):
    """The cwbackup task for the module's parameters."""
    task = without_defaults(params, argument_spec())
    task['dry_run'] = bool(check_mode)
    task['diff'] = bool(diff_mode)
    return task


def interpret(rc, stdout, stderr):
    """The module result for what the binary printed: its JSON result, with `failed` set from
    `ok`; anything else is a failure carrying rc, stdout and stderr."""
    lines = [line for line in (stdout or '').splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
        if not isinstance(result, dict) or 'ok' not in result:
            raise ValueError('not a cwbackup result')
    except (IndexError, ValueError):
        return dict(
            failed=True,
            changed=False,
            msg='cwbackup printed no JSON result (exit code %s): see stdout and stderr' % rc,
            rc=rc,
            stdout=stdout,
            stderr=stderr,
        )
    result['failed'] = not result.get('ok', False)
    result['changed'] = bool(result.get('changed', False))
    if stderr:
        result['stderr'] = stderr
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        mutually_exclusive=[('volume', 'volumes')],
        supports_check_mode=True,
    )
    # A secret inside a repository dict (type raw has no suboptions to mark no_log).
    for repo in (module.params['repository'], module.params['to']):
        s3 = repo.get('s3') if isinstance(repo, dict) else None
        if isinstance(s3, dict) and s3.get('secret_access_key'):
            module.no_log_values.add(s3['secret_access_key'])
    binary = module.params['binary_path'] or module.get_bin_path('cwbackup', required=True)
    task = build_task(module.params, module.check_mode, module._diff)
    rc, stdout, stderr = module.run_command([binary], data=json.dumps(task), binary_data=True)
    result = interpret(rc, stdout, stderr)
    # Ansible reports warnings given through module.warn; passing them to exit_json is
    # deprecated (ansible-core 2.19 warns on every call).
    for warning in result.pop('warnings', None) or []:
        module.warn(warning)
    if result['failed']:
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == '__main__':
    main()
