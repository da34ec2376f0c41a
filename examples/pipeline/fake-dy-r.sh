#!/usr/bin/env bash
# A harmless stand-in for `dy-r`, used by the demo's agent: it prints what a real run would do, step by step, and
# writes each step into $WORKSET_PROGRESS_FILE, which the agent reports with its heartbeats.
# The agent runs "<run prefix> <dy-r arguments>" with WORKSET_ID, WORKSET_URI, WORKSET_ATTEMPT and
# WORKSET_PROGRESS_FILE set, in the work directory it copied the workset's folder into.
#
# To show failures: FAKE_DYR_FAIL_WORKSETS (workset ids, one per line) fail their first FAKE_DYR_FAIL_ATTEMPTS
# attempts (default 1) with FAKE_DYR_EXIT (default 75, EX_TEMPFAIL: a transient error, retried by itself).
# To show long runs: FAKE_DYR_SLOW_WORKSETS (workset ids, one per line) spend FAKE_DYR_SLOW_SECONDS (default 30) in
# "pipeline running". To count runs: FAKE_DYR_RUNS_FILE gets one line per run started: workset id, attempt, the
# run's process id and its process group, tab separated.
set -euo pipefail

progress() {
  echo "fake dy-r: $1"
  if [[ -n "${WORKSET_PROGRESS_FILE:-}" ]]; then echo "$1" > "${WORKSET_PROGRESS_FILE}"; fi
  sleep "${2:-${FAKE_DYR_STEP_SECONDS:-0.5}}"
}

listed() {  # listed "<ids, one per line>": whether this workset is one of them
  local id
  while IFS= read -r id; do
    if [[ -n "${id}" && "${id}" == "${WORKSET_ID}" ]]; then return 0; fi
  done <<< "$1"
  return 1
}

if [[ -n "${FAKE_DYR_RUNS_FILE:-}" ]]; then
  printf '%s\t%s\t%s\t%s\n' "${WORKSET_ID}" "${WORKSET_ATTEMPT}" "$$" "$(ps -o pgid= -p $$ 2>/dev/null | tr -d ' ' || true)" \
    >> "${FAKE_DYR_RUNS_FILE}"
fi
echo "fake dy-r: workset ${WORKSET_ID} (attempt ${WORKSET_ATTEMPT}) from ${WORKSET_URI}"
echo "fake dy-r: arguments: $*"
if [[ -f daylily_work.yaml && -f stage_samples.tsv ]]; then
  echo "fake dy-r: the workset's folder is in $PWD ($(find . -type f -not -name 'workset-*' | wc -l) files)"
fi
progress staging
progress "cluster starting"
if listed "${FAKE_DYR_SLOW_WORKSETS:-}"; then
  progress "pipeline running" "${FAKE_DYR_SLOW_SECONDS:-30}"
else
  progress "pipeline running"
fi
if listed "${FAKE_DYR_FAIL_WORKSETS:-}" && [[ "${WORKSET_ATTEMPT}" -le "${FAKE_DYR_FAIL_ATTEMPTS:-1}" ]]; then
  echo "fake dy-r: spot capacity reclaimed during alignment, failing attempt ${WORKSET_ATTEMPT}" >&2
  exit "${FAKE_DYR_EXIT:-75}"
fi
progress exporting
echo "fake dy-r: done"
