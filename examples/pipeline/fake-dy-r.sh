#!/usr/bin/env bash
# A harmless stand-in for `dy-r`, used by the demo's agent: it prints what a real run would do, step by step, and
# writes each step into $WORKSET_PROGRESS_FILE, which the agent reports with its heartbeats.
# The agent runs "<run prefix> <dy-r arguments>" with WORKSET_ID, WORKSET_URI, WORKSET_ATTEMPT and
# WORKSET_PROGRESS_FILE set.
#
# To show failures: FAKE_DYR_FAIL_WORKSETS (workset ids, one per line) fail their first FAKE_DYR_FAIL_ATTEMPTS
# attempts (default 1) with FAKE_DYR_EXIT (default 75, EX_TEMPFAIL: a transient error, retried by itself).
set -euo pipefail

progress() {
  echo "fake dy-r: $1"
  if [[ -n "${WORKSET_PROGRESS_FILE:-}" ]]; then echo "$1" > "${WORKSET_PROGRESS_FILE}"; fi
  sleep "${FAKE_DYR_STEP_SECONDS:-0.5}"
}

echo "fake dy-r: workset ${WORKSET_ID} (attempt ${WORKSET_ATTEMPT}) from ${WORKSET_URI}"
echo "fake dy-r: arguments: $*"
progress staging
progress "cluster starting"
progress "pipeline running"
while IFS= read -r failing; do
  if [[ -n "${failing}" && "${failing}" == "${WORKSET_ID}" && "${WORKSET_ATTEMPT}" -le "${FAKE_DYR_FAIL_ATTEMPTS:-1}" ]]; then
    echo "fake dy-r: spot capacity reclaimed during alignment, failing attempt ${WORKSET_ATTEMPT}" >&2
    exit "${FAKE_DYR_EXIT:-75}"
  fi
done <<< "${FAKE_DYR_FAIL_WORKSETS:-}"
progress exporting
echo "fake dy-r: done"
