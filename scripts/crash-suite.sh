#!/usr/bin/env bash
# The crash suite's long mode: SIGKILL cwbackup during backups and restores (each with and
# without the database half, against the in-process emulator) KILLS times (default 200), at
# random times or once a chosen phase is seen, and check after each kill that nothing is lost
# and nothing is left over. Prints the kills per phase. CI runs the fast mode (20 kills) as
# part of the test suite. Repeat a run with CWBACKUP_CRASH_SEED=<seed>.
set -euo pipefail
cd "$(dirname "$0")/.."
CWBACKUP_CRASH_KILLS="${1:-200}" cargo test --locked --test integration \
    crash::random_sigkills_during_backup_and_restore_lose_nothing -- --nocapture
