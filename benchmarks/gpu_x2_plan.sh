#!/usr/bin/env bash
# The GPU measurements still open after the fourth pass, in one background pass on a 2-GPU machine
# (nvidia-h200-x2), so that no stage depends on one call's 10-minute limit:
#   mkdir -p /tmp/results; setsid bash benchmarks/gpu_x2_plan.sh > /tmp/results/plan.log 2>&1 < /dev/null &
# then, call after call (each within the machine's 30 s idle window): wait, and copy /tmp/results to $OUT.
# 1. issue 4: the full feature set from an empty cache on all 32 cores, then on 16 (one H100 machine's),
#    now that the score alignment runs parangonar's compiled DTW (91 s and 106 s in the fourth pass);
# 2. issue 8: the A/B of ab_wall_time.yaml (40 cells of 100 epochs, cached features) with 16 processes on
#    one GPU (8 took 495 s in the second pass; 8 threads were ~3x slower in the fourth).
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
S=benchmarks/gpu_suite.sh
echo "start $(date +%T)"
OUT=$R/features_32 bash $S featurise > "$R/features_32.log" 2>&1
rm -rf /tmp/cache
command -v taskset > /dev/null && OUT=$R/features_16 taskset -c 0-15 bash $S featurise > "$R/features_16.log" 2>&1
echo "features done $(date +%T)"
CUDA_VISIBLE_DEVICES=0 BACKENDS=local:16 GUARD=570 OUT=$R/abwall bash $S abwall > "$R/abwall.log" 2>&1
echo "all done $(date +%T)"
touch "$R/ALL_DONE"
