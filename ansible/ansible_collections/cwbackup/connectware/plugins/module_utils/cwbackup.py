# -*- coding: utf-8 -*-
# Copyright: (c) 2026, cwbackup developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What the modules of this collection share: the options that are task keys in every module,
the mapping of options onto a cwbackup task, running the binary, and reading its result. The
decisions (what changed, what to restore, what is damaged) are all the binary's."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json

# Options that are not task keys: they tell the module how to run the binary.
WRAPPER_ONLY = ('binary_path',)


def volume_options():
    """`volume` and `volumes`: what a task backs up, restores or compares with a set."""
    return dict(
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
    )


def common_options():
    """The options of every module: where the sets are, the lock wait, the binary."""
    return dict(
        repository=dict(type='raw', required=True),
        wait_for_lock_s=dict(type='int', default=0),
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


def build_task(params, spec, check_mode, diff_mode):
    """The cwbackup task for a module's parameters: check mode is `dry_run`, diff mode `diff`."""
    task = without_defaults(params, spec)
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


def run(module, task):
    """Runs the binary with `task` on standard input (secrets never reach argv) and returns
    the module result. The binary's warnings go through module.warn: passing `warnings` to
    exit_json is deprecated (ansible-core 2.19 warns on every call)."""
    # A secret inside a repository dict (a raw option has no suboptions to mark no_log).
    for repo in (module.params.get('repository'), module.params.get('to')):
        s3 = repo.get('s3') if isinstance(repo, dict) else None
        if isinstance(s3, dict) and s3.get('secret_access_key'):
            module.no_log_values.add(s3['secret_access_key'])
    binary = module.params['binary_path'] or module.get_bin_path('cwbackup', required=True)
    rc, stdout, stderr = module.run_command([binary], data=json.dumps(task), binary_data=True)
    result = interpret(rc, stdout, stderr)
    for warning in result.pop('warnings', None) or []:
        module.warn(warning)
    return result


def finish(module, result):
    """Ends the module: fail_json when the task failed, exit_json otherwise."""
    if result['failed']:
        module.fail_json(**result)
    module.exit_json(**result)
