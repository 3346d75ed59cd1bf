#!/usr/bin/env bash
# The recording-path measurement and the transcription benchmark on the GPU machine (docs/recordings.md).
# The working tree (~56 MiB) leaves a few MiB a call for carried files, so what Transkun needs travels over
# several calls to one warm machine, each carrying one ignored folder .gpu_pN holding one piece of
# payload.tar.xz, which this script keeps in /tmp/persist. The payload holds:
#   w1.pt w2.pt w3.pt  Transkun 2's checkpoint, every float tensor as fp16 (the mel buffer fp32), in three
#                      parts; put back together as fp32 here
#   site.tar.xz        transkun (code, no weights), mir_eval, pretty_midi (no sf2), mido, midirenderer,
#                      soundfile, cffi, pycparser, soxr, librosa and their missing needs
#   piano.sf2          FluidR3_GM's Acoustic Grand alone (render_recordings.py soundfont)
# Usage: bash benchmarks/transcribe_gpu.sh stash   (one call per piece)
#        bash benchmarks/transcribe_gpu.sh run     (the last call: render, benchmark, transcribe; results in $OUT)
set -uo pipefail
P=/tmp/persist
mkdir -p "$P"
for d in .gpu_p*; do [ -d "$d" ] && cp -r "$d"/. "$P"/; done
ls -la "$P"
[ "${1:-}" = run ] || exit 0
cat "$P"/payload.part.* | xz -d | tar -x -C "$P" || { echo "payload incomplete (machine restarted?)"; exit 3; }
rm -rf /tmp/site && tar -xJf "$P/site.tar.xz" -C /tmp && export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1
python3 - <<'EOF' || exit 4
import torch
sd = {}
for i in (1, 2, 3):
    sd.update(torch.load(f"/tmp/persist/w{i}.pt", map_location="cpu", weights_only=True))
torch.save({"state_dict": {k: v.float() if v.is_floating_point() else v for k, v in sd.items()}},
           "/tmp/site/transkun/pretrained/2.0.pt")
print("checkpoint:", len(sd), "tensors")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
t0=$(date +%s)
python3 benchmarks/render_recordings.py render data/percepiano/midi /tmp/r_clean --soundfont "$P/piano.sf2" --workers 16 || exit 5
python3 benchmarks/render_recordings.py render data/percepiano/midi /tmp/r_room --soundfont "$P/piano.sf2" --workers 16 --chain room || exit 5
echo "render_s $(( $(date +%s) - t0 ))" | tee "$OUT/render_time.txt"
python3 benchmarks/transcribe_throughput.py /tmp/r_clean "$OUT/clean" --n 32 --batch-sizes 8,32 --precisions fp32,bf16 \
  --corpus-precision "${CORPUS_PRECISION:-bf16}" --tar clean.tar.gz --deadline-s "${CLEAN_DEADLINE:-280}"
python3 benchmarks/transcribe_throughput.py /tmp/r_room "$OUT/room" --skip-throughput \
  --corpus-precision "${CORPUS_PRECISION:-bf16}" --tar room.tar.gz --deadline-s "${ROOM_DEADLINE:-120}"
