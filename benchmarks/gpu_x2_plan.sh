#!/usr/bin/env bash
# The GPU measurements still open after the fourth pass, in one background pass on a 2-GPU machine
# (nvidia-h200-x2), two lanes, each on one GPU and its own half of the cores (one H100 machine's 16):
#   mkdir -p /tmp/results; setsid bash benchmarks/gpu_x2_plan.sh > /tmp/results/plan.log 2>&1 < /dev/null &
# then, call after call (each within the machine's 30 s idle window): wait, and copy /tmp/results to $OUT.
#   GPU 0: the issue-8 cold start (render + log-mel from an empty cache, then ab_wall_time.yaml: 40 cells
#          of 100 epochs) with the threads backend, 8 cells at once on one process's CUDA streams (local
#          --jobs 8, processes time-sliced on the GPU: 22 s + 495 s in the second pass);
#   GPU 1: gpu_eval (AST and hybrid, 2 seeds x 4 folds), then `pianolab evaluate` on it with its weights,
#          every section, the cross-composer / cross-performer runs trained 8 at a time; then the
#          compiled training throughput of ast_tiny alone on its GPU (0.88x / 0.94x of the plain loop in
#          the third pass, measured beside another lane).
set -u
R=${RESULTS:-/tmp/results}; mkdir -p "$R"
S=benchmarks/gpu_suite.sh
echo "start $(date +%T)"
half=$(( $(nproc) / 2 )); pin_a=""; pin_b=""
command -v taskset > /dev/null && { pin_a="taskset -c 0-$((half - 1))"; pin_b="taskset -c $half-$((2 * half - 1))"; }
(export CUDA_VISIBLE_DEVICES=0
 BACKEND=threads JOBS=8 GUARD=570 OUT=$R/cold $pin_a bash $S cold
 echo "lane A done $(date +%T)") > "$R/laneA.log" 2>&1 &
(export CUDA_VISIBLE_DEVICES=1
 RUNS=/tmp/runs BACKEND=local JOBS=8 MAX_RUNS=1 GUARD=420 OUT=$R/eval $pin_b bash $S ab:gpu_eval evaluate:gpu_eval
 SIZES=ast_tiny GUARD=150 OUT=$R/laneB $pin_b bash $S throughput_compile
 echo "lane B done $(date +%T)") > "$R/laneB.log" 2>&1 &
wait
echo "all done $(date +%T)"
touch "$R/ALL_DONE"
