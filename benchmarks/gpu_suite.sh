#!/usr/bin/env bash
# One self-contained call on the GPU machine (no internet; the device tool carries .whl):
# install carried wheels, featurise everything from an empty cache, then run the named stages.
#   bash benchmarks/gpu_suite.sh STAGE...
# stages: featurise | features_fast (KINDS: a comma list instead) | throughput | throughput_compile | determinism | ab:NAME
#         | compare:NAME ($RUNS vs $COMPARE_WITH) | evaluate:NAME (MAX_RUNS: runs per variant for the
#         model-based sections; JOBS: cross-split runs at once) | throughput_compile (SIZES: a comma list of AST sizes)
#         | abwall (benchmarks/ab_wall_time.py: $BACKENDS, default packed,local:8; more options in $ABWALL_ARGS)
#         | cold (benchmarks/cold_start.py with $BACKEND and $JOBS) | profile (benchmarks/packed_profile.py)
#         | compile_time (benchmarks/compile_time.py)
#         | probe_cqt (the librosa kinds on 2 clips, serial, with faulthandler)
#         | render_fluidr3 (every performance rendered with .gpu_payload/piano.sf2 into renders/fluidr3: the
#           target of experiments/needs_renders/; carry .gpu_payload/piano.sf2)
# GUARD overrides the time limit (s) of evaluate, throughput_compile, abwall and cold.
# ab:NAME honours BACKEND (local | packed | ray | ray_packed), JOBS, GPUS_PER_RUN and RUNS (runs root);
# it prints the wall time and each GPU's utilisation.
# Packages: the wheels in .whl/, or one tarball of unpacked packages in .devsite/ (smaller: xz, Ray
# without its Java jars), installed once per machine into /tmp/site.
# Results land in $OUT (logs, reports). Each stage is time-guarded so the call ends inside its limit.
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if [ ! -e /tmp/site/.done ]; then
  mkdir -p /tmp/site
  if ls .devsite/*.tar.xz >/dev/null 2>&1; then tar xJf .devsite/*.tar.xz -C /tmp/site || exit 1
  else python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    .whl/*.whl || exit 1
  fi
  python3 -m compileall -q -j 0 /tmp/site > /dev/null  # the .pyc files pip writes at install (the bundle has none)
  touch /tmp/site/.done
fi
RUNS=${RUNS:-/tmp/runs}
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 PIANOLAB_CACHE=/tmp/cache PIANOLAB_RUNS=$RUNS \
  PIANOLAB_SPLITS=/tmp/splits MPLBACKEND=Agg
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
guard() { local secs=$1; shift; timeout "$secs" "$@"; echo "[$* -> rc $?]"; }
for stage in "$@"; do
  echo "=== $stage $(date +%T)"
  case $stage in
    featurise|features_fast)  # one shard process per core from an empty cache; featurise = the issue-4 set
      kinds=log_mel,cqt,symbolic,symbolic_aligned,all_traditional
      [ "$stage" = features_fast ] && kinds=log_mel,symbolic,symbolic_aligned
      [ -n "${KINDS:-}" ] && kinds=$KINDS  # e.g. KINDS=log_mel: the AST experiments' input only
      shards=$(nproc)
      rm -rf /tmp/cache /tmp/warm.done* /tmp/warm-*.log
      NUMBA_CACHE_DIR=$(mktemp -d /tmp/numba.XXXX); export NUMBA_CACHE_DIR  # numba's kernels, compiled afresh
      # each kind's numba kernels (librosa's, parangonar's) compiled by one process of its own (shards
      # compiling them at once crash), while the shards build the kinds that need none; they start on a
      # kind once its warm-up is done. PREWARM=1: compile them first, outside the timed part (numba's
      # cache then lives with the installed packages, like a .pyc)
      warm() {
        for kind in symbolic_aligned all_traditional; do
          [[ ",$kinds," == *",$kind,"* ]] || continue
          python3 benchmarks/featurise_all.py --cache-dir /tmp/cache --kinds $kind --warm-up \
            --after-warm-up /tmp/warm.done > /tmp/warm-$kind.log 2>&1 &
        done
        wait && touch /tmp/warm.done
      }
      [ "${PREWARM:-0}" = 1 ] && warm
      start=$(date +%s)
      [ -e /tmp/warm.done ] || warm &
      for i in $(seq 0 $((shards - 1))); do
        # PROFILE_SHARD=1: shard 0 runs under cProfile (its table in featurise_profile.txt; the wall is then not a figure)
        prof=(); [ "$i" = 0 ] && [ -n "${PROFILE_SHARD:-}" ] && prof=(-m cProfile -o /tmp/feat-0.prof)
        # the shards niced by SHARD_NICE (default 10), so that the warm-ups get their cores (58 vs 63 s, seventh pass)
        timeout 420 nice -n "${SHARD_NICE:-10}" python3 -X faulthandler "${prof[@]}" benchmarks/featurise_all.py --cache-dir /tmp/cache --workers 0 \
          --shard "$i/$shards" --kinds "$kinds" --after-warm-up /tmp/warm.done > "/tmp/feat-$i.log" 2>&1 &
      done
      wait
      end=$(date +%s)
      [ -n "${PROFILE_SHARD:-}" ] && python3 -c "import pstats; s = pstats.Stats('/tmp/feat-0.prof'); \
        s.sort_stats('cumulative').print_stats(45); s.sort_stats('tottime').print_stats(25)" > "$OUT/featurise_profile.txt"
      tail -qn 1 /tmp/warm-*.log | tee "$OUT/featurise.txt"
      tail -n 8 /tmp/feat-0.log | tee -a "$OUT/featurise.txt"
      grep -h "^phases" /tmp/feat-*.log | tee -a "$OUT/featurise.txt"
      grep -h "skipped [1-9]\|  skipped \|Error\|Fatal" /tmp/feat-*.log | head -30 | tee -a "$OUT/featurise.txt"
      echo "$shards shards, PREWARM=${PREWARM:-0}, SHARD_NICE=${SHARD_NICE:-10}, kinds $kinds: wall $((end - start)) s for 1001 clips, cache $(du -sh /tmp/cache | cut -f1)" \
        | tee -a "$OUT/featurise.txt" ;;
    render_fluidr3)
      [ -e renders/fluidr3.done ] || { guard 300 python3 benchmarks/render_recordings.py render data/percepiano/midi \
        renders/fluidr3 --soundfont .gpu_payload/piano.sf2 --workers "$(nproc)" 2>&1 | tail -2 | tee "$OUT/render_fluidr3.txt" \
        && [ "$(ls renders/fluidr3 | wc -l)" -ge 1011 ] && touch renders/fluidr3.done; } ;;
    probe_cqt)
      for kind in cqt all_traditional; do
        guard 120 python3 -X faulthandler benchmarks/featurise_all.py --cache-dir /tmp/probe-cache --workers 0 \
          --limit 2 --kinds $kind 2>&1 | tail -25 | tee -a "$OUT/probe_cqt.txt"
      done ;;
    determinism)
      for flag in "" --deterministic; do
        guard 200 python3 benchmarks/gpu_determinism.py $flag 2>&1 | tail -3 | tee -a "$OUT/determinism.txt"
      done ;;
    evaluate:*)  # evaluate a finished experiment: evaluate:NAME
      name=${stage#evaluate:}
      guard "${GUARD:-400}" python3 -m pianolab evaluate "experiments/$name.yaml" ${MAX_RUNS:+--max-runs $MAX_RUNS} \
        --jobs "${JOBS:-1}" 2>&1 \
        | tail -20 | tee "$OUT/evaluate-$name.txt"
      (cd "$RUNS/$name/evaluation" && tar czf "$OUT/$name-evaluation.tgz" .) ;;
    compare:*)  # compare:NAME: the runs in $RUNS against those in $COMPARE_WITH (cells, predictions, verdicts)
      name=${stage#compare:}
      guard 120 python3 benchmarks/compare_runs.py "experiments/$name.yaml" "$RUNS" "$COMPARE_WITH" 2>&1 \
        | tee "$OUT/compare-$name.txt" ;;
    throughput_compile)
      guard "${GUARD:-540}" python3 benchmarks/train_throughput.py --epochs 2 --compile ${SIZES:+--sizes $SIZES} 2>&1 \
        | tee "$OUT/throughput_compile.txt" ;;
    abwall)
      guard "${GUARD:-560}" python3 benchmarks/ab_wall_time.py --backends "${BACKENDS:-packed,local:8}" ${ABWALL_ARGS:-} 2>&1 \
        | grep -v Warn | tee "$OUT/ab_wall_time.txt" ;;
    compile_time)  # torch.compile of a packed model's forward and backward (benchmarks/compile_time.py)
      guard 300 python3 benchmarks/compile_time.py 2>&1 | grep -v Warn | tee "$OUT/compile_time.txt" ;;
    profile)  # where one packed variant's time goes (benchmarks/packed_profile.py)
      guard "${GUARD:-300}" python3 benchmarks/packed_profile.py 2>&1 | grep -v "Warn\|file/s" | tee "$OUT/profile.txt" ;;
    cold)
      guard "${GUARD:-560}" python3 benchmarks/cold_start.py --backend "${BACKEND:-packed}" --jobs "${JOBS:-1}" 2>&1 \
        | grep -v Warn | tee "$OUT/cold_start.txt" ;;
    throughput)
      guard 150 python3 benchmarks/train_throughput.py --epochs 1 2>&1 | tee "$OUT/throughput.txt" ;;
    ab:*)  # run an experiment file: ab:NAME -> experiments/NAME.yaml (NAME may name a subfolder)
      path=${stage#ab:}; name=${path##*/}
      python3 benchmarks/gpu_util.py python3 -m pianolab ab run "experiments/$path.yaml" --backend "${BACKEND:-local}" \
        --jobs "${JOBS:-4}" ${GPUS_PER_RUN:+--gpus-per-run $GPUS_PER_RUN} --tracker none 2>&1 \
        | grep -v "features:" | tee "$OUT/$name.txt"
      (cd "$RUNS/$name/report" && tar czf "$OUT/$name-report.tgz" .) ;;
  esac
done
