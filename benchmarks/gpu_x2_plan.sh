#!/usr/bin/env bash
# The GPU measurements still open after the third pass (issues 4, 5, 7), in one background pass on a
# 2-GPU machine (nvidia-h200-x2), so that no stage depends on one call's 10-minute limit:
#   mkdir -p /tmp/results; setsid bash benchmarks/gpu_x2_plan.sh > /tmp/results/plan.log 2>&1 < /dev/null &
# then, call after call (each within the machine's 30 s idle window): wait, and copy /tmp/results to $OUT.
# 1. the issue-4 feature set (log-mel, CQT, classic audio, symbolic, score-aligned) from an empty cache,
#    one shard process per core (one thread each), after one process has compiled librosa's numba kernels;
# 2. two lanes, one per GPU, each on its own half of the cores:
#    GPU 0: the stacked hybrid (e6: hybrid vs the trees, the AST alone and the random forest), then the
#           issue-8 cold start (render + log-mel from an empty cache, then ab_wall_time.yaml: 40 cells of
#           100 epochs) with the threads backend, 8 at once (with local --jobs 8: features 22 s, cells
#           495 s on this machine in the second pass);
#    GPU 1: the compiled training throughput of the two larger AST sizes (the smaller two were measured
#           in the third pass), then gpu_eval (AST and hybrid, 4 folds) and `pianolab evaluate` on it
#           with its weights, every section; then run-to-run determinism with and without
#           `train.deterministic`.
# B1 on 1 and 2 GPUs (issue 9) was measured in the third pass (docs/benchmarks.md).
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
S=benchmarks/gpu_suite.sh
echo "start $(date +%T)"
OUT=$R/features_all bash $S featurise > "$R/features_all.log" 2>&1
echo "features done $(date +%T)"
half=$(( $(nproc) / 2 )); pin_a=""; pin_b=""
command -v taskset > /dev/null && { pin_a="taskset -c 0-$((half - 1))"; pin_b="taskset -c $half-$((2 * half - 1))"; }
(export CUDA_VISIBLE_DEVICES=0
 RUNS=/tmp/runs_e6 BACKEND=local JOBS=6 OUT=$R/e6 $pin_a bash $S ab:e6_stacked_hybrid
 BACKEND=threads JOBS=8 GUARD=570 OUT=$R/cold $pin_a bash $S cold
 echo "lane A done $(date +%T)") > "$R/laneA.log" 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 SIZES=ast_small,ast_medium GUARD=330 OUT=$R/laneB $pin_b bash $S throughput_compile
 RUNS=/tmp/runs BACKEND=local JOBS=8 MAX_RUNS=1 GUARD=400 OUT=$R/eval $pin_b bash $S ab:gpu_eval evaluate:gpu_eval
 OUT=$R/laneB $pin_b bash $S determinism
 echo "lane B done $(date +%T)") > "$R/laneB.log" 2>&1 &
wait
echo "all done $(date +%T)"
touch "$R/ALL_DONE"
