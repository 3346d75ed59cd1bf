#!/usr/bin/env bash
# The GPU measurements of issues 4-9 in one pass on a 2-GPU machine (nvidia-h200-x2), run in the
# background so that no stage depends on one call's 10-minute limit:
#   mkdir -p /tmp/results; setsid bash benchmarks/gpu_x2_plan.sh > /tmp/results/plan.log 2>&1 < /dev/null &
# then, call after call (each within the machine's 30 s idle window): wait, and copy /tmp/results to $OUT.
# 1. the issue-4 feature set (log-mel, CQT, classic audio, symbolic, score-aligned) from an empty cache,
#    one shard process per core, after one process has compiled librosa's numba kernels;
# 2. B1 (4 AST sizes x 5 seeds x 4 folds) over both GPUs through Ray, 16 cells at once (350 s on
#    2026-11-30);
# 3. two lanes, one per GPU, each on its own half of the cores:
#    GPU 0: B1 again on one GPU through Ray (8 cells at once), every cell compared with the 2-GPU run,
#           then the compiled training throughput of the two smaller AST sizes;
#    GPU 1: the stacked hybrid (e6) beside `pianolab evaluate` of the 2-GPU B1 with its checkpoints
#           (neither is timed), then the compiled throughput of the two larger sizes.
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
S=benchmarks/gpu_suite.sh
echo "start $(date +%T)"
OUT=$R/features_all bash $S featurise > "$R/features_all.log" 2>&1
OUT=$R/setup bash $S features_fast > "$R/setup.log" 2>&1   # fills in anything a crashed shard left out
echo "features done $(date +%T)"
RUNS=/tmp/runs_x2 BACKEND=ray JOBS=16 GPUS_PER_RUN=0.125 OUT=$R/b1x2 bash $S ab:b1_model_sizes > "$R/b1x2.log" 2>&1
echo "b1 on 2 GPUs done $(date +%T)"
# each lane on its own half of the cores, so that lane B's tree fits (e6) do not slow lane A's B1
half=$(( $(nproc) / 2 )); pin_a=""; pin_b=""
command -v taskset > /dev/null && { pin_a="taskset -c 0-$((half - 1))"; pin_b="taskset -c $half-$((2 * half - 1))"; }
(export CUDA_VISIBLE_DEVICES=0
 RUNS=/tmp/runs BACKEND=ray JOBS=8 GPUS_PER_RUN=0.125 COMPARE_WITH=/tmp/runs_x2 OUT=$R/b1x1 \
   $pin_a bash $S ab:b1_model_sizes compare:b1_model_sizes
 SIZES=ast_ultra_tiny,ast_tiny GUARD=330 OUT=$R/laneA $pin_a bash $S throughput_compile
 echo "lane A done $(date +%T)") > "$R/laneA.log" 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 RUNS=/tmp/runs_x2 MAX_RUNS=1 GUARD=480 OUT=$R/eval $pin_b bash $S evaluate:b1_model_sizes > "$R/eval.log" 2>&1 &
 RUNS=/tmp/runs_e6 BACKEND=local JOBS=6 OUT=$R/e6 $pin_b bash $S ab:e6_stacked_hybrid
 wait
 SIZES=ast_small,ast_medium GUARD=330 OUT=$R/laneB $pin_b bash $S throughput_compile
 echo "lane B done $(date +%T)") > "$R/laneB.log" 2>&1 &
wait
echo "all done $(date +%T)"
touch "$R/ALL_DONE"
