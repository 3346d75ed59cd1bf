#!/usr/bin/env bash
# One self-contained call on the GPU machine (no internet; the device tool carries .whl):
# install carried wheels, featurise everything from an empty cache, then run the named stages.
#   bash benchmarks/gpu_suite.sh STAGE...
# stages: featurise | features_fast | throughput | throughput_compile | determinism | ab:NAME | evaluate:NAME
#         | abwall (benchmarks/ab_wall_time.py: local, local:8, packed) | cold (benchmarks/cold_start.py)
# ab:NAME honours BACKEND (local | packed | ray) and JOBS.
# Results land in $OUT (logs, reports). Each stage is time-guarded so the call ends inside its limit.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 PIANOLAB_CACHE=/tmp/cache PIANOLAB_RUNS=/tmp/runs \
  PIANOLAB_SPLITS=/tmp/splits MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
guard() { local secs=$1; shift; timeout "$secs" "$@"; echo "[$* -> rc $?]"; }
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    featurise|features_fast)  # 16 shard processes from an empty cache; featurise = the issue-4 benchmark set
      kinds=log_mel,cqt,all_traditional,symbolic,symbolic_aligned
      [ "$stage" = features_fast ] && kinds=log_mel,symbolic,symbolic_aligned
      start=$(date +%s)
      for i in $(seq 0 15); do
        timeout 420 python3 -X faulthandler benchmarks/featurise_all.py --cache-dir /tmp/cache --workers 0 \
          --shard "$i/16" --kinds "$kinds" > "/tmp/feat-$i.log" 2>&1 &
      done
      wait
      end=$(date +%s)
      tail -n 7 /tmp/feat-0.log | tee "$OUT/featurise.txt"
      grep -h "skipped [1-9]\|Error\|Fatal" /tmp/feat-*.log | head -20 | tee -a "$OUT/featurise.txt"
      echo "16 shards, kinds $kinds: wall $((end - start)) s for 1001 clips, cache $(du -sh /tmp/cache | cut -f1)" \
        | tee -a "$OUT/featurise.txt" ;;
    determinism)
      guard 200 python3 benchmarks/gpu_determinism.py 2>&1 | tail -3 | tee "$OUT/determinism.txt" ;;
    evaluate:*)  # evaluate a finished experiment: evaluate:NAME
      name=${stage#evaluate:}
      guard 400 python3 -m pianolab evaluate "experiments/$name.yaml" 2>&1 | tail -20 | tee "$OUT/evaluate-$name.txt"
      (cd "/tmp/runs/$name/evaluation" && tar czf "$OUT/$name-evaluation.tgz" .) ;;
    throughput_compile)
      guard 240 python3 benchmarks/train_throughput.py --epochs 2 --compile --sizes ast_ultra_tiny,ast_small \
        --strides 16 2>&1 | tee "$OUT/throughput_compile.txt" ;;
    abwall)
      guard 560 python3 benchmarks/ab_wall_time.py --backends "${BACKENDS:-packed,local:8}" 2>&1 \
        | grep -v Warn | tee "$OUT/ab_wall_time.txt" ;;
    cold)
      guard 560 python3 benchmarks/cold_start.py 2>&1 | grep -v Warn | tee "$OUT/cold_start.txt" ;;
    throughput)
      guard 150 python3 benchmarks/train_throughput.py --epochs 1 2>&1 | tee "$OUT/throughput.txt" ;;
    ab:*)  # run an experiment file: ab:NAME -> experiments/NAME.yaml
      name=${stage#ab:}
      python3 -m pianolab ab run "experiments/$name.yaml" --backend "${BACKEND:-local}" --jobs "${JOBS:-4}" \
        --tracker none 2>&1 | tee "$OUT/$name.txt"
      (cd "/tmp/runs/$name/report" && tar czf "$OUT/$name-report.tgz" .) ;;
  esac
done
