#!/usr/bin/env bash
# Every GPU measurement of issues 4-9 in one pass on a 2-GPU machine (nvidia-h200-x2), run in the
# background so that no stage depends on one call's 10-minute limit:
#   setsid bash benchmarks/gpu_x2_plan.sh > /tmp/results/plan.log 2>&1 &
# then, call after call: tar the finished files of /tmp/results into $OUT.
# 1. features from an empty cache (one shard process per core);
# 2. B1 (4 AST sizes x 5 seeds x 4 folds) on both GPUs through Ray, one packed task per variant;
# 3. two lanes, one per GPU: GPU 0 runs B1 again on one GPU (same backend and requests), compares
#    every cell with the 2-GPU run, evaluates it, then the hybrid experiment e2 and the throughput
#    tables; GPU 1 runs the librosa probe, determinism, packed vs --jobs 8, and the cold start.
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
S=benchmarks/gpu_suite.sh
B1="RUNS=/tmp/runs_x2 JOBS=4 GPUS_PER_RUN=0.5"
echo "start $(date +%T)"
OUT=$R/setup bash $S features_fast > "$R/setup.log" 2>&1
echo "features done $(date +%T)"
env $B1 BACKEND=ray_packed OUT=$R/b1x2 bash $S ab:b1_model_sizes > "$R/b1x2.log" 2>&1
backend=ray_packed; [ -s "$R/b1x2/b1_model_sizes-report.tgz" ] || backend=packed  # Ray failed: packed
echo "b1 on 2 GPUs done $(date +%T); one-GPU backend $backend"
(export CUDA_VISIBLE_DEVICES=0
 env RUNS=/tmp/runs JOBS=4 GPUS_PER_RUN=0.5 BACKEND=$backend COMPARE_WITH=/tmp/runs_x2 OUT=$R/b1x1 \
   bash $S ab:b1_model_sizes compare:b1_model_sizes evaluate:b1_model_sizes
 echo "lane A: b1 done $(date +%T)"
 BACKEND=packed OUT=$R/e2 bash $S ab:e2_hybrid_relative
 OUT=$R/throughput bash $S throughput throughput_compile
 echo "lane A done $(date +%T)") > "$R/laneA.log" 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 OUT=$R/laneB bash $S probe_cqt determinism abwall cold
 echo "lane B done $(date +%T)") > "$R/laneB.log" 2>&1 &
wait
echo "all done $(date +%T)"
touch "$R/ALL_DONE"
