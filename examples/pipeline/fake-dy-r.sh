#!/usr/bin/env bash
# A harmless stand-in for `dy-r`, used by the demo's agent: it prints what a real run would do, step by step.
# The agent runs "<run prefix> <dy-r arguments>" with WORKSET_ID, WORKSET_URI and WORKSET_ATTEMPT set.
set -euo pipefail

echo "fake dy-r: workset ${WORKSET_ID} (attempt ${WORKSET_ATTEMPT}) from ${WORKSET_URI}"
echo "fake dy-r: arguments: $*"
for step in staging "cluster starting" "pipeline running" exporting; do
  echo "fake dy-r: ${step}"
  sleep "${FAKE_DYR_STEP_SECONDS:-0.5}"
done
if [[ -n "${FAKE_DYR_EXIT:-}" ]]; then
  echo "fake dy-r: failing on purpose with ${FAKE_DYR_EXIT}" >&2
  exit "${FAKE_DYR_EXIT}"
fi
echo "fake dy-r: done"
