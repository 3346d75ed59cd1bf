#!/usr/bin/env bash
# The recording-path measurement and the transcription benchmarks on the GPU machine (docs/recordings.md).
#   bash benchmarks/transcribe_gpu.sh build        here: the payload, .gpu_payload/ (git-ignored, ~40 MiB):
#       site.tar.xz        transkun (code, no weights), mir_eval, pretty_midi (no sf2), mido, midirenderer,
#                          soundfile, cffi, pycparser, soxr, librosa and their needs the image lacks
#       transkun_fp16.pt   Transkun 2's checkpoint, every float tensor as fp16 (upcast to fp32 there)
#       piano.sf2          FluidR3_GM's Acoustic Grand alone (Debian fluid-soundfont-gm; render_recordings.py)
#       serve.tar.xz       what `pianolab serve` needs beyond that (FastAPI, uvicorn, skops, SHAP, ...)
#   bash benchmarks/transcribe_gpu.sh aside | back here: move docs/results, the transcriptions and the shipped
#       models but `default` out of the working tree (into .gpu_aside/) and back, so that tree and payload fit
#       the 64 MiB a call carries
#   bash benchmarks/transcribe_gpu.sh run SET...   there (carry .gpu_payload): render every performance
#       (clean and through the room chain), then for each SET: clean | room: transcribe all of it (the first
#       such set also runs the throughput benchmarks, unless BENCH=0); serve: the load benchmark with recordings (clean
#       renders) against `pianolab serve --model default` (benchmarks/serve_load.py --audio). A second call
#       to the same warm machine reuses the renders and the unpacked payload. Results in $OUT.
set -uo pipefail
cd "$(git rev-parse --show-toplevel 2>/dev/null || pwd)"
case ${1:-} in
  build)
    set -e
    for p in /.gpu_payload/ /.gpu_aside/; do grep -qx "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
    mkdir -p .gpu_payload
    bash benchmarks/gpu_bundle.sh .gpu_payload/site.tar.xz transkun mir_eval pretty_midi mido midirenderer \
      soundfile cffi pycparser soxr librosa audioread pooch platformdirs decorator importlib_resources
    bash benchmarks/gpu_bundle.sh .gpu_payload/serve.tar.xz fastapi starlette pydantic pydantic_core annotated-types \
      annotated-doc typing-inspection python-multipart uvicorn skops prettytable wcwidth shap slicer opentelemetry-api \
      importlib_metadata
    .venv/bin/python - <<'EOF'
import importlib.util, pathlib, torch
ckpt = pathlib.Path(importlib.util.find_spec("transkun").origin).parent / "pretrained" / "2.0.pt"
sd = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
torch.save({k: v.half() if v.is_floating_point() and "freq2mels" not in k else v for k, v in sd.items()},
           ".gpu_payload/transkun_fp16.pt")
EOF
    .venv/bin/python benchmarks/render_recordings.py soundfont /usr/share/sounds/sf2/FluidR3_GM.sf2 .gpu_payload/piano.sf2
    du -sh .gpu_payload/* ;;
  aside)
    mkdir -p .gpu_aside && mv docs/results .gpu_aside/results && mv data/percepiano/transcribed .gpu_aside/ \
      && for m in with_score recording recording_with_score; do mv src/pianolab/models_shipped/$m .gpu_aside/; done ;;
  back)  # merges: a results folder written meanwhile stays
    mkdir -p docs/results && cp -a -n .gpu_aside/results/. docs/results/ && rm -rf .gpu_aside/results
    mv .gpu_aside/transcribed data/percepiano/
    for m in with_score recording recording_with_score; do mv .gpu_aside/$m src/pianolab/models_shipped/; done ;;
  run)
    shift
    OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
    if [ ! -e /tmp/site/.done ]; then
      mkdir -p /tmp/site && tar -xJf .gpu_payload/site.tar.xz -C /tmp/site && tar -xJf .gpu_payload/serve.tar.xz -C /tmp/site || exit 3
      python3 - <<'EOF' || exit 4
import torch
sd = torch.load(".gpu_payload/transkun_fp16.pt", map_location="cpu", weights_only=True)
torch.save({"state_dict": {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}},
           "/tmp/site/transkun/pretrained/2.0.pt")
print("checkpoint:", len(sd), "tensors")
EOF
      touch /tmp/site/.done
    fi
    export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
    for set in "$@"; do  # the renders each set needs (serve sends the clean ones), once per machine
      r=$set; [ "$r" = serve ] && r=clean
      [ -e /tmp/r_$r.done ] && continue
      t0=$(date +%s)
      chain=(); [ "$r" = room ] && chain=(--chain room)
      python3 benchmarks/render_recordings.py render data/percepiano/midi /tmp/r_$r --soundfont .gpu_payload/piano.sf2 \
        --workers "$(nproc)" "${chain[@]}" || exit 5
      echo "render_s $r $(( $(date +%s) - t0 ))" | tee -a "$OUT/render_time.txt" && touch /tmp/r_$r.done
    done
    first=1
    for set in "$@"; do
      if [ "$set" = serve ]; then
        timeout "${SERVE_S:-240}" python3 benchmarks/serve_load.py --audio /tmp/r_clean --max-mb 20 --workers "${SERVE_WORKERS:-4}" \
          --requests "${REQUESTS:-300}" --clients 8 --burst 40 --max-seconds "${LOAD_S:-120}" > "$OUT/serve_load_recordings.json"
        echo "[serve_load -> rc $?]"; tail -c 1500 "$OUT/serve_load_recordings.json"; continue
      fi
      bench=(--skip-throughput); [ $first = 1 ] && [ "${BENCH:-1}" = 1 ] && bench=(--n "${N:-64}" --batch-sizes 16 --precisions bf16 --workers "${WORKERS:-1,2,4,8}")
      python3 benchmarks/transcribe_throughput.py /tmp/r_$set "$OUT/$set" "${bench[@]}" --corpus-precision bf16 \
        --corpus-batch "${BATCH:-16}" --corpus-workers "${CORPUS_WORKERS:-0}" --tar "$set.tar.gz" --deadline-s "${DEADLINE:-500}" \
        --cache /tmp/tcache
      first=0
    done ;;
  *) echo "usage: bash benchmarks/transcribe_gpu.sh build | aside | back | run SET..." >&2; exit 2 ;;
esac
