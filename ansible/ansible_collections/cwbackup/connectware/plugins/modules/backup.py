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
extends_documentation_fragment:
  - cwbackup.connectware.cwbackup
  - cwbackup.connectware.cwbackup.volumes
attributes:
  check_mode:
    description:
      - Sets the task's C(dry_run); the binary decides what would change and changes nothing (no set is written or
        deleted, no file of the volume is touched, no POST reaches the Connectware API).
    support: partial
    details:
      - The volume half, O(operation=prune), O(operation=import), O(operation=verify) and O(operation=list) are
        predicted exactly.
      - The database half is not. Whether the database changed since the newest set (backup), or differs from the
        set's (restore), is only known from a fresh server-side database backup, which check mode does not start.
        With O(api), check mode therefore reports the database as to be backed up or restored (C(changed=true))
        and warns that it was not compared, where a real run may find it unchanged.
  diff_mode:
    description:
      - Sets the task's C(diff); the result's RV(diff) holds C(before) and C(after).
      - They summarise rather than list files (a volume can hold many thousands). O(operation=backup) the newest set
        before and after; O(operation=restore) the live content digests before and after, and how many files the
        restore adds, removes and changes; O(operation=prune) the sets before and after.
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
  to:
    description: O(operation=copy) the repository the sets are copied to, in the forms of O(repository).
    type: raw
  installation:
    description:
      - The whole compose installation (backup and restore only; not together with O(volume) or O(volumes)).
      - Every volume of the compose project (found by the label C(com.docker.compose.project)), each a component named by
        its short name, and the files of O(installation.install_dir) as the component C(files).
      - With O(installation.quiesce=stop), the project's running containers are stopped while the volumes are read or
        replaced and exactly those are started again, also when the task fails.
      - A restore onto a fresh host creates the missing volumes with the compose labels and the install directory, so
        that C(docker compose up) adopts them; no safety set is written when nothing existed.
      - Needs the Docker Engine (C(/var/run/docker.sock) or E(DOCKER_HOST)) and root.
    type: dict
    suboptions:
      compose_project:
        description: The compose project's name.
        type: str
        default: connectware
      install_dir:
        description: The directory holding C(.env) and C(docker-compose.yml); a restore creates it if missing.
        type: path
        default: /opt/connectware
      volumes:
        description:
          - V(all) the project's volumes, or a list of their short names (for example V(service-manager), V(postgresql)).
          - "Restore: the set's volumes, or the ones named."
        type: raw
        default: all
      files:
        description:
          - Names of files directly in O(installation.install_dir), archived with their modes.
          - Default V(.env) and V(docker-compose.yml) (a missing one is a warning); a file named here that is missing
            fails the task. V([]) takes no files. Each must be a regular file.
          - "Restore: the set's files come back together; name all of them, or give V([]) to leave the install
            directory alone."
        type: list
        elements: str
      quiesce:
        description: V(stop) stops the running containers while reading; V(none) stops nothing (warns about live databases).
        type: str
        choices: [stop, none]
        default: stop
      stop_timeout_s:
        description: Seconds one container may take to stop before it is killed, which fails the task.
        type: int
        default: 30
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
notes:
  - After a restore, Connectware must be restarted (use O(restart) or a handler on RV(restart_required))
    and every Admin-UI browser session must be restarted.
seealso:
  - module: cwbackup.connectware.backup_info
    description: Lists and verifies sets without ever changing anything (C(changed=false), full check mode).
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
  description: Whether the task succeeded; the module fails exactly when it is false.
  returned: always
  type: bool
  sample: true
msg:
  description: One human sentence saying what happened.
  returned: always
  type: str
  sample: wrote backup set 20261127T021500.123Z-1.10.2
operation:
  description: The operation that ran; null when the binary could not read the task.
  returned: always
  type: str
  sample: backup
dry_run:
  description: Whether this was a check-mode run (nothing was changed).
  returned: always
  type: bool
  sample: false
backup:
  description:
    - The set written, restored or found unchanged. In check mode, a backup that would write a new set returns none (it has no id yet).
  returned: backup, restore and import, when a set is involved
  type: dict
  contains:
    id:
      description: The set's id, its directory name.
      type: str
      sample: 20261127T021500.123Z-1.10.2
    path:
      description: The set's directory.
      type: str
      sample: /backup/connectware/20261127T021500.123Z-1.10.2
    manifest:
      description:
        - The set's C(manifest.json) (format C(cwbackup/2), C(schemas/manifest.schema.json)).
        - C(components) has one entry per file of the set, with C(name), C(kind), C(file), C(compression),
          C(sha256), C(bytes), C(content_digest) and, for volumes, C(files), C(expanded_bytes) and C(source).
      type: dict
      sample:
        format: cwbackup/2
        id: 20261127T021500.123Z-1.10.2
        created_at: "2026-11-27T02:15:00.123Z"
        tool_version: 0.1.0
        connectware_version: 1.10.2
        server_version: 1.10.2
        skew_ms: 0
        installation: null
        encryption: null
        components:
          - name: volume
            kind: volume
            file: volume.tar.gz
            compression: gzip
            sha256: 9b2e3f8735626a36a0656440eca749c87e6996689ac7b79bed2ace214af77b84
            bytes: 156
            files: 2
            expanded_bytes: 19
            content_digest: "sha256:708c226ce4efc14646e12450ae1b54f2f632309ba1f632f92d6ccde0a2284fe3"
            source: {path: /var/lib/docker/volumes/connectware_service-manager/_data}
            started_at: "2026-11-27T02:15:00.211Z"
            finished_at: "2026-11-27T02:15:00.213Z"
          - name: db
            kind: db
            file: db.tgz
            compression: null
            sha256: f2bc574f830c6c219ab83dcf4154c58d68f343ff0d7df1cf5f90b56a8d20e0f2
            bytes: 285
            backup_id: 1.10.2_2026-11-27T02:15:00.213Z
            status_message: OK
            content_digest: "sha256:dc80f02072e9c2862ff5c2c988f0ebac5e6115db08529c3128e0ef185103c1d8"
            started_at: "2026-11-27T02:15:00.211Z"
            finished_at: "2026-11-27T02:15:00.373Z"
safety_backup:
  description: The C(pre-restore-) set holding the state from before the restore (C(id), C(path), C(manifest) as in RV(backup)).
  returned: restore, when it changed something and O(safety_backup) is true
  type: dict
  sample:
    id: pre-restore-20261128T091500.042Z
    path: /backup/connectware/pre-restore-20261128T091500.042Z
volume:
  description: What happened to the component named C(volume) (task key O(volume)); the same as its entry in RV(components).
  returned: backup, restore and import, when the task has O(volume)
  type: dict
  contains:
    changed:
      description: The volume was written into a new set (backup) or the live volume was changed (restore).
      type: bool
      sample: true
    path:
      description: The volume's directory.
      type: str
      sample: /var/lib/docker/volumes/connectware_service-manager/_data
    files:
      description: Entries below the volume's root.
      type: int
      sample: 2
    bytes:
      description: Sum of the file sizes in bytes.
      type: int
      sample: 19
    content_digest:
      description: The volume's content digest, independent of archive bytes (README, "content digest").
      type: str
      sample: "sha256:708c226ce4efc14646e12450ae1b54f2f632309ba1f632f92d6ccde0a2284fe3"
db:
  description: What happened to the database half; the same as the C(db) entry of RV(components).
  returned: backup, restore and import, when the task has O(api) (import, O(db_file))
  type: dict
  contains:
    changed:
      description: A database backup was taken into a new set (backup), or restored (restore).
      type: bool
      sample: true
    backup_id:
      description: The server's id of the database backup, C(<Connectware version>_<ISO time>).
      type: str
      sample: 1.10.2_2026-11-27T02:15:00.213Z
    status_message:
      description: The server's last status message.
      type: str
      sample: OK
components:
  description:
    - One entry per component written, found unchanged or restored (backup, restore, import), or of the set checked
      (verify, the named set or else the newest that is not a safety set).
  returned: backup, restore, verify and import
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
      description: The component was written (backup) or its live state changed (restore).
      type: bool
      sample: true
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
  description:
    - O(operation=list) every complete set, newest first.
    - O(operation=prune) and O(operation=backup) with O(keep_last), the sets retention deleted (in check mode, would delete).
  returned: list, prune, and backup with O(keep_last) when not in check mode
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
  description: Connectware must be restarted (and Admin-UI sessions renewed) to use what was restored.
  returned: always
  type: bool
  sample: false
diff:
  description:
    - Before and after, in diff mode; a summary (set ids, content digests, file counts), not a list of files.
  returned: in diff mode, for backup, restore, prune and import
  type: dict
  contains:
    before:
      description: The state before the task.
      type: dict
      sample: {newest_set: 20261126T021500.087Z-1.10.2}
    after:
      description: The state after the task, or that check mode predicts.
      type: dict
      sample: {newest_set: 20261127T021500.123Z-1.10.2}
warnings:
  description:
    - What the operator should know that did not stop the task, as Ansible shows warnings.
    - For example that check mode did not compare the database, that a set was restored onto another Connectware version,
      or that O(api.validate_certs=false) is insecure.
  returned: when the binary warned
  type: list
  elements: str
  sample: ["a dry run cannot tell whether the database changed: that needs a server-side backup, which a dry run does not start"]
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
      sample: busy
    message:
      description: What failed, on what, and what to do about it.
      type: str
      sample: >-
        repository /backup/connectware is in use by backup (pid 4242 on cw-prod-1, since 2026-11-27T02:15:00.000Z):
        run again when it has finished, or set wait_for_lock_s
    retryable:
      description: Whether the same task may succeed if simply run again later.
      type: bool
      sample: true
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
    """The module's options: the task's keys (but dry_run and diff, which come from the modes)."""
    spec = common_options()
    spec.update(volume_options())
    spec.update(
        operation=dict(type='str', required=True, choices=['backup', 'restore', 'verify', 'list', 'prune', 'copy', 'import']),
        to=dict(type='raw'),
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
        installation=dict(
            type='dict',
            options=dict(
                compose_project=dict(type='str', default='connectware'),
                install_dir=dict(type='path', default='/opt/connectware'),
                volumes=dict(type='raw', default='all'),
                files=dict(type='list', elements='str'),
                quiesce=dict(type='str', choices=['stop', 'none'], default='stop'),
                stop_timeout_s=dict(type='int', default=30),
            ),
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
    )
    return spec


def main():
    spec = argument_spec()
    module = AnsibleModule(
        argument_spec=spec,
        mutually_exclusive=[('volume', 'volumes', 'installation')],
        supports_check_mode=True,
    )
    task = build_task(module.params, spec, module.check_mode, module._diff)
    finish(module, run(module, task))


if __name__ == '__main__':
    main()
