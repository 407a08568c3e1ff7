# -*- coding: utf-8 -*-
# Copyright: (c) 2026, cwbackup developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function
__metaclass__ = type


class ModuleDocFragment(object):
    # The options every module has (plugins/module_utils/cwbackup.py common_options), and what
    # every module needs on the managed host.
    DOCUMENTATION = r'''
options:
  repository:
    description:
      - Where the backup sets are. A directory path (a backup creates it with mode 0700), a dict with C(path),
        or an S3-compatible bucket, a dict with C(s3) holding C(endpoint), C(bucket), C(prefix), C(region),
        C(access_key_id), one secret, C(path_style), C(ca_file) and C(validate_certs).
      - For S3 give one secret, C(secret_access_key_file), C(secret_access_key_env) or C(secret_access_key)
        (hidden from the output); with neither a key id nor a secret the binary reads C(AWS_ACCESS_KEY_ID) and
        C(AWS_SECRET_ACCESS_KEY) from its environment.
    type: raw
    required: true
  wait_for_lock_s:
    description:
      - How long, in seconds, to wait for another cwbackup task to release the repository lock; V(0) fails at once
        with C(error.kind=busy), naming the holder. At most V(604800) (7 days).
    type: int
    default: 0
  binary_path:
    description:
      - Path of the cwbackup binary on the managed host. Default C(cwbackup) found on E(PATH).
      - The role C(cwbackup.connectware.install) puts the binary at C(/usr/local/bin/cwbackup).
    type: path
requirements:
  - The C(cwbackup) binary on the managed host (on E(PATH), or named by O(binary_path)); the module runs it there
    with the task on standard input.
  - Root on the managed host (C(become=true)) for Docker volumes (C(docker_volume)) and their directories under
    C(/var/lib/docker/volumes), which only root may read and write.
  - For the database half, HTTPS from the managed host to the Connectware API (C(api.url)).
seealso:
  - name: Connectware backup and restore
    description: The vendor's description of what a backup of Connectware holds and how it is restored.
    link: https://docs.cybus.io/documentation/backup-and-restore
  - name: Connectware database backup through the REST API
    description: The maintenance API that cwbackup uses for the database half.
    link: https://docs.cybus.io/documentation/backup-and-restore/user-database
'''

    # volume_options() of plugins/module_utils/cwbackup.py.
    VOLUMES = r'''
options:
  volume:
    description:
      - The service-manager volume, the component C(volume) of a set; what a backup archives, a restore replaces and a
        verify with C(against_live) compares with a set. Absent (and without O(volumes)), the volume half is skipped.
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
'''
