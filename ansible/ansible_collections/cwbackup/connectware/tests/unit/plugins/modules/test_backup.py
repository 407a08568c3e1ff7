# -*- coding: utf-8 -*-
"""Unit tests of the modules' mapping: options -> task, output -> result, and the check that
the options of backup are exactly the task schema's keys and those of backup_info the subset
that applies to list and verify."""

from __future__ import absolute_import, division, print_function
__metaclass__ = type

import json
import os

from ansible_collections.cwbackup.connectware.plugins.module_utils import cwbackup
from ansible_collections.cwbackup.connectware.plugins.modules import backup, backup_info

# Task keys that come from Ansible's modes rather than from options.
FROM_MODES = {'dry_run', 'diff'}
SCHEMA_TYPES = {'str': 'string', 'path': 'string', 'bool': 'boolean', 'int': 'integer',
                'float': 'number', 'list': 'array', 'dict': 'object', 'raw': None}


def task_schema():
    """schemas/task.schema.json of the repository this collection lives in."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get('CWBACKUP_TASK_SCHEMA', '')]
    while here != os.path.dirname(here):
        candidates.append(os.path.join(here, 'schemas', 'task.schema.json'))
        here = os.path.dirname(here)
    for path in candidates:
        if path and os.path.exists(path):
            with open(path) as f:
                return json.load(f)
    raise AssertionError('schemas/task.schema.json not found above %s' % __file__)


def resolve(schema, node):
    ref = node.get('$ref')
    if ref:
        return schema['$defs'][ref.split('/')[-1]]
    return node


def json_types(node, schema=None):
    """The JSON types a schema node allows (for a oneOf of consts, their types; for an anyOf of
    forms, theirs), null aside."""
    if 'anyOf' in node and 'type' not in node:
        return set().union(*(json_types(resolve(schema, form), schema) for form in node['anyOf']))
    if 'oneOf' in node and 'type' not in node:
        return set().union(*(json_types(alternative) for alternative in node['oneOf']))
    t = node.get('type')
    types = set(t if isinstance(t, list) else [t])
    types.discard('null')
    return types


def check_options(schema, properties, spec, where, subset=False):
    """Properties, types, choices and defaults of the schema equal the options'. With `subset`,
    the options (and choices) may be fewer than the schema's, but each is as the schema says."""
    keys = set(properties) - (FROM_MODES if where == 'task' else set())
    options = set(spec) - set(cwbackup.WRAPPER_ONLY if where == 'task' else ())
    if subset:
        assert options <= keys, '%s: options %s are not task keys' % (where, sorted(options - keys))
        keys = options
    assert options == keys, '%s: options %s, schema keys %s' % (where, sorted(options), sorted(keys))
    for name in keys:
        prop = resolve(schema, properties[name])
        option = spec[name]
        expected = SCHEMA_TYPES[option['type']]
        got = json_types(prop, schema)
        if expected is None:
            assert 'anyOf' in prop and len(got) > 1, '%s.%s: a raw option is a schema anyOf of several types: %s' % (
                where, name, got)
        elif expected == 'number':
            assert got <= {'number', 'integer'}, '%s.%s: type %s' % (where, name, got)
        else:
            assert got == {expected}, '%s.%s: option type %s, schema type %s' % (where, name, option['type'], got)
        if 'enum' in prop or 'oneOf' in prop:
            choices = prop.get('enum') or [c.get('const') for c in prop['oneOf']]
            if subset:
                assert set(option['choices']) <= set(choices), '%s.%s: choices' % (where, name)
            else:
                assert sorted(option.get('choices', [])) == sorted(choices), '%s.%s: choices' % (where, name)
        default = properties[name].get('default', prop.get('default'))
        assert option.get('default') == default, '%s.%s: option default %r, schema default %r' % (
            where, name, option.get('default'), default)
        assert option.get('required', False) == (name in schema_required(schema, where)), '%s.%s: required' % (where, name)
        if option['type'] == 'dict':
            check_options(schema, prop['properties'], option['options'], name, subset)
        if option['type'] == 'list' and option.get('elements') == 'dict':
            item = resolve(schema, prop['items'])
            check_options(schema, item['properties'], option['options'], name, subset)


def schema_required(schema, where):
    if where == 'task':
        return set(schema.get('required', []))
    defs = {'volume': 'VolumeSpec', 'volumes': 'NamedVolumeSpec', 'api': 'ApiSpec', 'encryption': 'EncryptionSpec',
            'installation': 'InstallationSpec'}
    return set(schema['$defs'][defs[where]].get('required', []))


def test_options_are_the_task_schema():
    schema = task_schema()
    check_options(schema, schema['properties'], backup.argument_spec(), 'task')


# Task keys that do not apply to list or verify: what backup_info leaves out, on purpose.
NOT_READ_ONLY = {'installation', 'to', 'api', 'force', 'keep_last', 'keep_safety', 'verify', 'compression', 'safety_backup', 'restart',
                 'volume_archive', 'db_file', 'connectware_version'}


def test_info_options_are_the_task_keys_of_list_and_verify():
    schema = task_schema()
    spec = backup_info.argument_spec()
    check_options(schema, schema['properties'], spec, 'task', subset=True)
    assert spec['operation']['choices'] == ['list', 'verify']
    assert set(spec['encryption']['options']) == {'identity_file'}
    # A task key added later is either taken by backup_info or named here as not applying.
    left_out = set(schema['properties']) - FROM_MODES - set(spec)
    assert left_out == NOT_READ_ONLY, 'task keys neither in backup_info nor in NOT_READ_ONLY: %s' % sorted(
        left_out ^ NOT_READ_ONLY)


def test_defaults_and_unset_options_are_not_passed():
    spec = backup.argument_spec()
    params = dict((name, option.get('default')) for name, option in spec.items())
    params.update(operation='verify', repository='/backup', deep=True)
    task = cwbackup.build_task(params, spec, check_mode=False, diff_mode=False)
    assert task == {'operation': 'verify', 'repository': '/backup', 'deep': True, 'dry_run': False, 'diff': False}


def test_check_and_diff_modes_become_dry_run_and_diff():
    task = cwbackup.build_task({'operation': 'list', 'repository': '/r'}, backup.argument_spec(), check_mode=True, diff_mode=True)
    assert task['dry_run'] is True and task['diff'] is True


def test_nested_options_keep_what_is_set():
    params = {'operation': 'backup', 'repository': '/r', 'binary_path': '/usr/bin/cwbackup',
              'api': {'url': 'https://c', 'username': 'admin', 'password': 'pw', 'password_file': None,
                      'password_env': None, 'token': None, 'validate_certs': True, 'ca_file': '/ca.pem',
                      'timeout_s': 1800, 'poll_interval_s': 0.5}}
    task = cwbackup.build_task(params, backup.argument_spec(), False, False)
    assert task['api'] == {'url': 'https://c', 'password': 'pw', 'ca_file': '/ca.pem', 'poll_interval_s': 0.5}
    assert 'binary_path' not in task


def test_volumes_items_keep_what_is_set():
    params = {'operation': 'backup', 'repository': '/r',
              'volumes': [{'docker_volume': 'p_postgresql', 'path': None, 'name': None},
                          {'docker_volume': None, 'path': '/data/x', 'name': 'x'}]}
    task = cwbackup.build_task(params, backup.argument_spec(), False, False)
    assert task['volumes'] == [{'docker_volume': 'p_postgresql'}, {'path': '/data/x', 'name': 'x'}]


def test_a_result_becomes_the_module_result():
    line = json.dumps({'ok': False, 'changed': False, 'msg': 'damaged', 'error': {'kind': 'integrity_error'}})
    result = cwbackup.interpret(1, 'noise\n' + line + '\n', 'log line\n')
    assert result['failed'] is True
    assert result['error']['kind'] == 'integrity_error'
    assert result['stderr'] == 'log line\n'
    ok = cwbackup.interpret(0, json.dumps({'ok': True, 'changed': True, 'msg': 'wrote'}), '')
    assert ok['failed'] is False and ok['changed'] is True


def test_output_that_is_not_a_result_is_a_failure_with_rc_stdout_stderr():
    result = cwbackup.interpret(139, 'Segmentation fault', 'core dumped')
    assert result['failed'] is True
    assert result['rc'] == 139
    assert result['stdout'] == 'Segmentation fault' and result['stderr'] == 'core dumped'
    assert cwbackup.interpret(0, '', '')['failed'] is True
