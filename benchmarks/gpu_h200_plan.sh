#!/usr/bin/env bash
# GPU measurements still open, in one background pass on a one-GPU machine (nvidia-h200: 16 cores, as
# issues 4 and 8 ask), so that no stage depends on one call's 10-minute limit:
#   mkdir -p /tmp/results; setsid bash benchmarks/gpu_h200_plan.sh STAGE... > /tmp/results/plan.log 2>&1 < /dev/null &
# then, call after call (each within the machine's 30 s idle window): wait, and copy /tmp/results to $OUT.
# Stages: featurise (issue 4's full set from an empty cache, one shard per core) and any stage of
# benchmarks/gpu_suite.sh.
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
# run from a private copy: each later call of the device tool re-syncs the checkout it was started in
# (files vanish for a moment: a feature build running meanwhile skipped clips as "not found")
if [ "${PLAN_COPY:-}" != 1 ]; then
  rm -rf /tmp/plan-repo && cp -a . /tmp/plan-repo && cd /tmp/plan-repo && PLAN_COPY=1 exec bash "$0" "$@"
fi
echo "start $(date +%T) on $(nproc) cores"
# STAGE+VAR=VALUE+... runs STAGE with those variables set, e.g. featurise+PREWARM=1 or
# "abwall+BACKENDS=packed,local:8+ABWALL_ARGS=--epochs 10 --seeds 1"
for arg in "$@"; do
  IFS=+ read -r -a parts <<< "$arg"
  name=$(echo "$arg" | tr -c 'A-Za-z0-9_.,=:\n-' _)
  OUT=$R/$name env "${parts[@]:1}" bash benchmarks/gpu_suite.sh "${parts[0]}" > "$R/$name.log" 2>&1
  echo "$arg done $(date +%T)"
done
touch "$R/ALL_DONE"
