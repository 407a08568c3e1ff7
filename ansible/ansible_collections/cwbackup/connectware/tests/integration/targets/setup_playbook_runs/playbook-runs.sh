# shellcheck shell=bash
# Sourced by the runme.sh of every target (aliases: needs/target/setup_playbook_runs): ansible-test
# sets ANSIBLE_DEPRECATION_WARNINGS=false for what it runs itself, so each target runs
# ansible-playbook through expect, which turns them on again.
#
# expect EXPECTED ansible-playbook ARGS...: runs the playbook, shows its output, and exits
# unless the outcome is EXPECTED, read from the play recap of the one host:
#   changed    the play succeeded and changed something (changed > 0)
#   unchanged  the play succeeded and changed nothing (changed=0)
#   failed     the play failed (a non-zero exit and failed > 0)
# Any deprecation warning fails too. The output stays in $run_log for further checks.

run_log="$(mktemp)"

expect() {
    local expected=$1 rc recap changed failed
    shift
    echo "== expect $expected: $*"
    set +e
    ANSIBLE_NOCOLOR=1 ANSIBLE_DEPRECATION_WARNINGS=true "$@" > "$run_log" 2>&1
    rc=$?
    set -e
    cat "$run_log"
    if grep -q 'DEPRECATION' "$run_log"; then
        echo "FAIL: a deprecation warning (above)"
        exit 1
    fi
    recap=$(grep -E '^[^ ]+ +: ok=[0-9]+ +changed=[0-9]+ +unreachable=[0-9]+ +failed=[0-9]+' "$run_log" || true)
    if [ "$(printf '%s\n' "$recap" | grep -c .)" != 1 ]; then
        echo "FAIL: expected the recap of one host, got: $recap"
        exit 1
    fi
    changed=$(printf '%s\n' "$recap" | sed -E 's/.* changed=([0-9]+) .*/\1/')
    failed=$(printf '%s\n' "$recap" | sed -E 's/.* failed=([0-9]+) .*/\1/')
    case "$expected" in
        changed) [ "$rc" = 0 ] && [ "$changed" -gt 0 ] ;;
        unchanged) [ "$rc" = 0 ] && [ "$changed" = 0 ] ;;
        failed) [ "$rc" != 0 ] && [ "$failed" -gt 0 ] ;;
        *) echo "expect: unknown outcome $expected"; exit 2 ;;
    esac || {
        echo "FAIL: expected $expected, got exit code $rc and the recap: $recap"
        exit 1
    }
}

# expect_output PATTERN: the last run's output matches PATTERN (grep -E), or the test fails.
expect_output() {
    grep -qE "$1" "$run_log" || {
        echo "FAIL: the last run's output lacks: $1"
        exit 1
    }
}
